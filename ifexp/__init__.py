"""ifexp: choose chain-of-thought training data with influence functions."""

__version__ = "0.1.0"
