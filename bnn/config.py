"""Binarization configuration: :class:`BConfig` and the factories it holds.

Like ``torch.ao.quantization.QConfig``, a :class:`BConfig` holds *factories*, not
modules: every binary layer calls them to build its own processes, so no two
layers share state. A factory is a class, or ``Cls.with_args(**kwargs)``.

A factory whose constructor has a required first positional parameter receives
the layer being built (so a binarizer can size its parameters from
``layer.in_channels`` / ``layer.out_channels``); any other factory is called
with no arguments. Both custom-binarizer styles of the original toolkit's
README therefore work unchanged.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional

import torch.nn as nn

__all__ = ["BConfig", "Factory", "with_args", "build_process"]


class Factory:
    """A picklable partial: ``Factory(Cls, a=1)()`` builds ``Cls(a=1)``.

    Built by ``Cls.with_args(**kwargs)``; defined at module level (unlike a local
    class) so that ``torch.save`` of a whole prepared model pickles.
    """

    __slots__ = ("cls", "kwargs")

    def __init__(self, cls: Callable[..., nn.Module], **kwargs: Any):
        if isinstance(cls, Factory):
            kwargs = {**cls.kwargs, **kwargs}
            cls = cls.cls
        self.cls = cls
        self.kwargs = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        return self.cls(*args, **{**self.kwargs, **kwargs})

    def with_args(self, **kwargs: Any) -> "Factory":
        return Factory(self, **kwargs)

    def __getstate__(self):
        return (self.cls, self.kwargs)

    def __setstate__(self, state):
        self.cls, self.kwargs = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Factory) and self.cls is other.cls and self.kwargs == other.kwargs

    def __hash__(self) -> int:
        return hash((self.cls, repr(sorted(self.kwargs.items(), key=lambda kv: kv[0]))))  # values may be lists

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{_name(self.cls)}.with_args({args})"


def with_args(cls: Callable[..., nn.Module], **kwargs: Any) -> Factory:
    """``with_args(Cls, **kw)``: the factory form for classes without a ``with_args`` method."""
    return Factory(cls, **kwargs)


def _name(factory: Any) -> str:
    return getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None) or repr(factory)


_FIELDS = ("activation_pre_process", "activation_post_process", "weight_pre_process")


def _check_factory(field: str, factory: Any) -> None:
    if factory is None:
        return
    if isinstance(factory, nn.Module):
        cls = type(factory).__name__
        raise ValueError(
            f"BConfig.{field} got an instance of {cls}; pass the class {cls} "
            f"or {cls}.with_args(...) instead, so every layer builds its own"
        )
    if not callable(factory):
        raise ValueError(f"BConfig.{field} must be a class or a factory (Cls.with_args(...)), got {factory!r}")


def _is_identity(factory: Any) -> bool:
    target = factory.cls if isinstance(factory, Factory) else factory
    return factory is None or target is nn.Identity


class _BConfigFields(NamedTuple):
    activation_pre_process: Optional[Callable[..., nn.Module]] = None
    activation_post_process: Optional[Callable[..., nn.Module]] = None
    weight_pre_process: Optional[Callable[..., nn.Module]] = None


class BConfig(_BConfigFields):
    """How one layer is binarized: ``post(op(pre(x), wpre(W), b), x)``.

    Args:
        activation_pre_process: factory of the input binarizer ``pre``.
        activation_post_process: factory of the output process ``post``; its
            forward receives the layer output and the original input.
        weight_pre_process: factory of the weight binarizer ``wpre``.

    Each field is ``None`` (identity), a class, or ``Cls.with_args(**kw)``.
    ``BConfig()`` keeps a layer in full precision.
    """

    __slots__ = ()

    def __new__(cls, activation_pre_process=None, activation_post_process=None, weight_pre_process=None):
        values = (activation_pre_process, activation_post_process, weight_pre_process)
        for field, factory in zip(_FIELDS, values):
            _check_factory(field, factory)
        return super().__new__(cls, *values)

    @property
    def is_float(self) -> bool:
        """True when all three processes are identity: the layer stays full precision."""
        return all(_is_identity(f) for f in self)

    def __repr__(self) -> str:
        parts = [f"{field}={f!r}" if f is None or isinstance(f, Factory) else f"{field}={_name(f)}" for field, f in zip(_FIELDS, self)]
        return f"BConfig({', '.join(parts)})"


def _wants_layer(factory: Any) -> bool:
    """Whether the factory's constructor takes the layer as a required first positional argument."""
    target, given = (factory.cls, factory.kwargs) if isinstance(factory, Factory) else (factory, {})
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    first = params[0]
    return (
        first.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and first.default is inspect.Parameter.empty
        and first.name not in given
    )


def build_process(factory: Any, layer: nn.Module) -> nn.Module:
    """Instantiate one process of a BConfig for ``layer`` (identity for ``None``).

    The result is moved to the device and floating dtype of the layer's weight.
    """
    if factory is None:
        return nn.Identity()
    module = factory(layer) if _wants_layer(factory) else factory()
    if not isinstance(module, nn.Module):
        raise TypeError(f"factory {factory!r} returned {type(module).__name__}, expected an nn.Module")
    weight = getattr(layer, "weight", None)
    if weight is not None:
        module.to(device=weight.device)
        if weight.is_floating_point():
            module.to(dtype=weight.dtype)
    return module
