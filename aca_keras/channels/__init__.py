"""After the search: channel importance scores and channel allocation."""
