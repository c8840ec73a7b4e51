"""Binarizers by name: the names a YAML recipe (and :mod:`bnn.presets`) may use.

Every binarizer of :mod:`bnn.ops` is registered under its class name. A user's
own binarizer becomes usable by name in a recipe once registered::

    @bnn.ops.register_binarizer
    class MySign(bnn.ops.Binarizer): ...

    @bnn.ops.register_binarizer("my_sign")   # or under another name
    class MySign2(bnn.ops.Binarizer): ...
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Union

import torch.nn as nn

from ..hints import did_you_mean

__all__ = ["register_binarizer", "get_binarizer", "registered_binarizers"]

_REGISTRY: Dict[str, type] = {}


def register_binarizer(cls_or_name: Union[type, str, None] = None, *, name: Optional[str] = None) -> Union[type, Callable[[type], type]]:
    """Register a binarizer class under ``name`` (its class name by default); usable as a decorator.

    Registering a different class under a name already taken is a ``ValueError``;
    registering the same class again is a no-op.
    """
    if isinstance(cls_or_name, str):
        name, cls_or_name = cls_or_name, None

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_binarizer: {cls!r} is not an nn.Module subclass")
        key = name or cls.__name__
        taken = _REGISTRY.get(key)
        if taken is not None and taken is not cls:
            raise ValueError(f"register_binarizer: the name {key!r} is already taken by "
                             f"{taken.__module__}.{taken.__qualname__}; pass another name")
        _REGISTRY[key] = cls
        return cls

    return register if cls_or_name is None else register(cls_or_name)


def get_binarizer(name: str) -> type:
    """The binarizer class registered as ``name`` (exact, then case-insensitive); a ``KeyError`` with the closest name."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    lowered = {key.lower(): cls for key, cls in _REGISTRY.items()}
    if str(name).lower() in lowered:
        return lowered[str(name).lower()]
    raise KeyError(f"unknown binarizer {name!r}" + did_you_mean(name, _REGISTRY))


def registered_binarizers() -> Dict[str, type]:
    """A copy of the registry: name -> class."""
    return dict(_REGISTRY)
