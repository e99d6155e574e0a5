"""nnparity: train one network spec identically on several deep-learning backends and compare them."""

__version__ = "0.1.0"
