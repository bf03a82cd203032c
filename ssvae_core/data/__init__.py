"""Data: loading and validating datasets, the built-in datasets, augmentation, and the
neighbour graph over the examples.
"""
