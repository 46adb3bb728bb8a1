"""Keras layers: the operation registry and its operations, BatchNorm, channel layers."""
