"""bnn: binary neural networks in PyTorch.

Prepare a float model with :func:`prepare_binary_model` (or set ``bconfig``
attributes and call :func:`convert`), train it with the recipes of
:mod:`bnn.engine`, rebuild a trained run with :func:`load_trained`, and ship it
packed to 1-bit weights.
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
    "load_trained",
    "layers",
    "ops",
    "presets",
    "models",
    "data",
]


def __getattr__(name: str):
    # ``bnn.load_trained`` lives in the engine, imported on first use: a process that only loads a
    # packed model imports neither the engine nor its dependencies (pyyaml, iopath)
    if name == "load_trained":
        from .engine.run_dir import load_trained

        return load_trained
    raise AttributeError(f"module 'bnn' has no attribute {name!r}")
