"""Binary-friendly model zoo (timm style: one architecture per file, options as
arguments). All models are plain float modules; make them binary with
:func:`bnn.prepare_binary_model`, keeping :func:`float_layer_names` full precision::

    model = bnn.models.get_model("resnet18", num_classes=10, stem="cifar")
    model = bnn.prepare_binary_model(model, bconfig,
                                     ignore_layers_name=bnn.models.float_layer_names(model))

Registered names: ``resnet18``, ``resnet34`` (:mod:`bnn.models.resnet`),
``reactnet_a`` (:mod:`bnn.models.reactnet`), ``vgg_small`` (:mod:`bnn.models.vgg_small`).
"""
import inspect
from typing import Callable, Dict, List

import torch.nn as nn

from ..hints import did_you_mean
from .common import RPReLU, float_layer_names, make_activation
from .reactnet import ReActNetA, reactnet_a
from .resnet import ResNet, resnet18, resnet34
from .vgg_small import VGGSmall, vgg_small

__all__ = [
    "get_model", "list_models", "model_options", "register_model", "float_layer_names",
    "ResNet", "resnet18", "resnet34", "ReActNetA", "reactnet_a", "VGGSmall", "vgg_small",
    "RPReLU", "make_activation",
]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_CLASSES: Dict[str, type] = {}


def register_model(name: str, builder: Callable[..., nn.Module], cls: type = None) -> None:
    """Registers ``builder`` under ``name`` (``cls``: the class whose ``__init__``
    receives the builder's ``**kwargs``, used to check option names)."""
    _MODELS[name] = builder
    if cls is not None:
        _CLASSES[name] = cls


register_model("resnet18", resnet18, ResNet)
register_model("resnet34", resnet34, ResNet)
register_model("reactnet_a", reactnet_a, ReActNetA)
register_model("vgg_small", vgg_small, VGGSmall)


def list_models() -> List[str]:
    """Sorted registered model names."""
    return sorted(_MODELS)


def _accepted_kwargs(name: str):
    names = set()
    for fn in (_MODELS[name], getattr(_CLASSES.get(name), "__init__", None)):
        if fn is None:
            continue
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    names.discard("self")
    names.discard("layers")
    return names


def model_options(name: str) -> List[str]:
    """Sorted option names ``get_model(name, ...)`` accepts."""
    if name not in _MODELS:
        get_model(name)  # raises the one-line unknown-model error
    return sorted(_accepted_kwargs(name))


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model ``name`` with ``kwargs`` as options.

    An unknown name or option is a one-line ``ValueError`` naming the closest
    valid one, e.g. ``unknown model 'resnet81' (did you mean 'resnet18'?)``.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}" + did_you_mean(name, list_models()))
    accepted = _accepted_kwargs(name)
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"unknown option {key!r} for model {name!r}" + did_you_mean(key, accepted))
    return _MODELS[name](**kwargs)
