"""The search space as data: cell topology, op-set names, genotypes and ACA architectures.

Pure Python and NumPy: nothing here imports Keras or TensorFlow."""
