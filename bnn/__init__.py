"""bnn: binary neural networks in PyTorch.

Prepare a float model with :func:`prepare_binary_model` (or set ``bconfig``
attributes and call :func:`convert`), train it with the recipes of
:mod:`bnn.engine`, and ship it packed to 1-bit weights.
"""
from . import data, layers, models, ops, presets
from .config import BConfig
from .deploy import pack_binary_model
from .diagnostics import diagnose
from .nncf_config import NNCFSchedule, from_nncf_config
from .prepare import convert, prepare_binary_model
from .summary import summary
from .switches import set_binarization

__version__ = "0.2.0"

__all__ = [
    "BConfig",
    "prepare_binary_model",
    "convert",
    "set_binarization",
    "from_nncf_config",
    "NNCFSchedule",
    "summary",
    "diagnose",
    "pack_binary_model",
    "layers",
    "ops",
    "presets",
    "models",
    "data",
]
