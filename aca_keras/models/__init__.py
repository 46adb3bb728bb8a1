"""Keras models: the search supernet and the derived (evaluation) network."""
