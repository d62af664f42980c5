"""TinyTorch: a small, readable deep-learning library built one notebook at a time."""
__version__ = "0.9.0"
