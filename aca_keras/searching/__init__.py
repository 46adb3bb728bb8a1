"""The search stage: settings, bi-level optimisation, variants, collapse monitor and the
``search()`` pipeline (named ``searching`` so that ``aca_keras.search`` stays the function)."""
