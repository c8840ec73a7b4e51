"""Fake-binarized layers: drop-in subclasses of the torch layers they replace."""
from .binary_layer import BinaryLayerMixin
from .conv import Conv1d, Conv2d
from .linear import Linear

__all__ = ["BinaryLayerMixin", "Conv1d", "Conv2d", "Linear"]
