"""Turn a float model into a fake-binarized one: propagate configs, then swap layers.

Modelled on ``torch/ao/quantization/quantize.py``: :func:`propagate_bconfig`
decides the config of every swappable layer, :func:`swap_modules` replaces the
layers. :func:`prepare_binary_model` and :func:`convert` are the two entry points.

Precedence, lowest to highest, for one layer:

1. the global ``bconfig`` argument;
2. a ``bconfig`` attribute on the layer or its nearest ancestor that has one;
3. a ``$regex$`` key of ``custom_config_layers_name`` matching the layer's name
   or an ancestor's (``re.fullmatch``; the deepest matching name wins);
4. an exact key of ``custom_config_layers_name`` naming the layer or an
   ancestor (the deepest wins);
5. ``ignore_layers_name`` (exact name, ``$regex$``, ``_first_``, ``_last_``):
   the layer stays float, whatever else says.

A name or regex that matches no module is an error (with the closest name). A
name or regex that matches modules none of which is or holds a swappable layer
(say a ``BatchNorm2d``) changes nothing: :func:`prepare_binary_model` warns
(``UserWarning``, naming the entry and what it matched) rather than raising,
because one list of float layers often serves several models, and NNCF's
scopes name layers that its algorithm does not binarize. A ``bconfig``
attribute that is not a :class:`BConfig` is an error naming the module.

The swapped layer keeps the forward, forward pre- and backward hooks of the
layer it replaces, as ``torch.ao.quantization.swap_module`` does; the hook
tables are handed over, so the handles returned when the hooks were
registered still remove them.
"""
from __future__ import annotations

import re
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch.nn as nn

from .config import BConfig
from .hints import did_you_mean
from .layers import BinaryLayerMixin, Conv1d, Conv2d, Linear
from .ops import name_binarizers

__all__ = [
    "DEFAULT_MODULES_MAPPING",
    "prepare_binary_model",
    "convert",
    "propagate_bconfig",
    "swap_modules",
]

DEFAULT_MODULES_MAPPING: Dict[type, type] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Linear: Linear}

FIRST, LAST = "_first_", "_last_"


def _is_regex(key: str) -> bool:
    return len(key) >= 2 and key.startswith("$") and key.endswith("$")


def _compile(key: str, argument: str) -> "re.Pattern[str]":
    try:
        return re.compile(key[1:-1])
    except re.error as exc:
        raise ValueError(f"{argument}: invalid regex {key!r}: {exc}") from None


def _lineage(name: str) -> List[str]:
    """``'a.b.c'`` -> ``['a.b.c', 'a.b', 'a', '']``: the module and its ancestors, deepest first."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _unknown_name_error(argument: str, key: str, names: Sequence[str]) -> ValueError:
    return ValueError(f"{argument}: no module named {key!r}" + did_you_mean(key, [n for n in names if n], list_all=False))


def _check_bconfig_attributes(modules: Mapping[str, nn.Module]) -> None:
    for name, module in modules.items():
        value = getattr(module, "bconfig", None)
        if value is not None and not isinstance(module, BinaryLayerMixin) and not isinstance(value, BConfig):
            where = f"module {name!r}" if name else "the model"
            raise TypeError(
                f"{where} ({type(module).__name__}) has a bconfig attribute of type {type(value).__name__}; "
                f"expected a bnn.BConfig (or None)"
            )


def _uncovered_warning(argument: str, key: str, matched: Sequence[str], modules: Mapping[str, nn.Module],
                       mapping: Mapping[type, type]) -> str:
    shown = ", ".join(f"{n} ({type(modules[n]).__name__})" for n in matched[:3]) + (", ..." if len(matched) > 3 else "")
    swappable = ", ".join(sorted({cls.__name__ for cls in mapping}))
    return (f"{argument}: {key!r} matches {shown}, which holds no swappable layer ({swappable}); "
            f"the entry has no effect")


def _swappable(module: nn.Module, mapping: Mapping[type, type]) -> bool:
    return type(module) in mapping or isinstance(module, BinaryLayerMixin)


def propagate_bconfig(
    model: nn.Module,
    bconfig: Optional[BConfig],
    modules_mapping: Mapping[type, type],
    custom_config_layers_name: Optional[Mapping[str, BConfig]] = None,
    ignore_layers_name: Optional[Iterable[str]] = None,
) -> Dict[str, Optional[BConfig]]:
    """The config of every swappable layer of ``model``, by module name.

    ``None`` means nothing applies (the layer is left as it is); an ignored layer
    gets ``BConfig()`` (float).

    Raises ``ValueError`` for a key or ignore entry that names no module (with the
    closest name), an invalid or unmatched regex, and ``TypeError`` for a value or
    ``bconfig`` attribute that is not a BConfig. Entries that cover no swappable
    layer are accepted silently here; :func:`prepare_binary_model` warns about them.
    """
    return _resolve(model, bconfig, modules_mapping, custom_config_layers_name, ignore_layers_name)[0]


def _resolve(
    model: nn.Module,
    bconfig: Optional[BConfig],
    modules_mapping: Mapping[type, type],
    custom_config_layers_name: Optional[Mapping[str, BConfig]],
    ignore_layers_name: Optional[Iterable[str]],
) -> Tuple[Dict[str, Optional[BConfig]], List[str]]:
    """:func:`propagate_bconfig`'s result and a warning for each entry that covers no swappable layer."""
    if custom_config_layers_name is not None and not isinstance(custom_config_layers_name, Mapping):
        raise TypeError(
            "custom_config_layers_name must be a dict {layer name or '$regex$': BConfig}, "
            f"got {type(custom_config_layers_name).__name__}"
        )
    custom = dict(custom_config_layers_name or {})
    ignore = [ignore_layers_name] if isinstance(ignore_layers_name, str) else list(ignore_layers_name or [])
    if bconfig is not None and not isinstance(bconfig, BConfig):
        raise TypeError(f"bconfig must be a BConfig, got {type(bconfig).__name__}")

    modules = dict(model.named_modules(remove_duplicate=False))
    _check_bconfig_attributes(modules)
    names = list(modules)
    targets = [name for name, module in modules.items() if _swappable(module, modules_mapping)]
    covered = {ancestor for name in targets for ancestor in _lineage(name)}
    uncovered: List[str] = []

    def check_covers(argument: str, key: str, matched: Sequence[str]) -> None:
        if not any(n in covered for n in matched):
            uncovered.append(_uncovered_warning(argument, key, matched, modules, modules_mapping))

    exact: Dict[str, BConfig] = {}
    regexes: List[Tuple["re.Pattern[str]", BConfig]] = []
    for key, value in custom.items():
        if not isinstance(value, BConfig):
            raise TypeError(f"custom_config_layers_name[{key!r}] must be a BConfig, got {type(value).__name__}")
        if _is_regex(key):
            pattern = _compile(key, "custom_config_layers_name")
            matched = [n for n in names if n and pattern.fullmatch(n)]
            if not matched:
                raise ValueError(f"custom_config_layers_name: regex {key!r} matches no module name")
            check_covers("custom_config_layers_name", key, matched)
            regexes.append((pattern, value))
        elif key in modules:
            check_covers("custom_config_layers_name", key, [key])
            exact[key] = value
        else:
            raise _unknown_name_error("custom_config_layers_name", key, names)

    ignored = set()
    for key in ignore:
        if key in (FIRST, LAST):
            if targets:
                ignored.add(targets[0] if key == FIRST else targets[-1])
        elif _is_regex(key):
            pattern = _compile(key, "ignore_layers_name")
            matched = [n for n in names if n and pattern.fullmatch(n)]
            if not matched:
                raise ValueError(f"ignore_layers_name: regex {key!r} matches no module name")
            check_covers("ignore_layers_name", key, matched)
            ignored.update(matched)
        elif key in modules:
            check_covers("ignore_layers_name", key, [key])
            ignored.add(key)
        else:
            raise _unknown_name_error("ignore_layers_name", key, names)

    result: Dict[str, Optional[BConfig]] = {}
    for name in targets:
        lineage = _lineage(name)
        if any(n in ignored for n in lineage):
            result[name] = BConfig()
            continue
        chosen = bconfig
        for ancestor in lineage:  # deepest first; a binary layer's own config is a result, not a request
            module = modules[ancestor]
            if not isinstance(module, BinaryLayerMixin) and getattr(module, "bconfig", None) is not None:
                chosen = module.bconfig
                break
        chosen = _deepest_regex(lineage, regexes) or chosen
        chosen = next((exact[n] for n in lineage if n in exact), chosen)
        result[name] = chosen
    return result, uncovered


def _deepest_regex(lineage: Sequence[str], regexes: Sequence[Tuple["re.Pattern[str]", BConfig]]) -> Optional[BConfig]:
    for name in lineage[:-1]:  # the root has the empty name, which no regex key targets
        for pattern, value in reversed(regexes):  # a later key wins over an earlier one
            if pattern.fullmatch(name):
                return value
    return None


def _learned_state(module: BinaryLayerMixin) -> Dict[str, object]:
    """Parameters and buffers of a binary layer's processes, by their key in the layer's state dict."""
    state = {}
    for process in ("activation_pre_process", "weight_pre_process", "activation_post_process"):
        sub = getattr(module, process)
        for key, tensor in list(sub.named_parameters()) + list(sub.named_buffers()):
            state[f"{process}.{key}"] = tensor
    return state


def _swap_one(module: nn.Module, bconfig: Optional[BConfig], mapping: Mapping[type, type]) -> nn.Module:
    if bconfig is None:  # nothing asks for a change
        return module
    previous = module if isinstance(module, BinaryLayerMixin) else None
    float_module = previous.to_float() if previous is not None else module
    if bconfig.is_float:
        return float_module
    binary_cls = mapping.get(type(float_module))
    if binary_cls is None:
        return module
    new = binary_cls.from_float(float_module, bconfig)
    if previous is not None:
        old = _learned_state(previous)
        for key, tensor in _learned_state(new).items():
            if key in old and old[key].shape == tensor.shape:
                tensor.data.copy_(old[key].data)
    return new


#: The hook tables a swapped layer takes over (``torch.ao.quantization.swap_module`` carries the forward
#: and forward pre-hooks; the flags tables belong to them, and full backward hooks ride along).
_HOOK_TABLES = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_backward_pre_hooks", "_backward_hooks",
)


def _hand_over_hooks(old: nn.Module, new: nn.Module) -> None:
    """``new`` takes ``old``'s hook tables themselves (not copies), so existing handles still remove the hooks."""
    if not any(getattr(old, table, None) for table in _HOOK_TABLES):
        return
    for table in _HOOK_TABLES:
        if hasattr(old, table):
            setattr(new, table, getattr(old, table))
    new._is_full_backward_hook = old._is_full_backward_hook


def _swapped(module: nn.Module, bconfig: Optional[BConfig], mapping: Mapping[type, type]) -> nn.Module:
    new = _swap_one(module, bconfig, mapping)
    if new is not module:
        _hand_over_hooks(module, new)
    return new


def swap_modules(model: nn.Module, configs: Mapping[str, Optional[BConfig]], modules_mapping: Mapping[type, type]) -> nn.Module:
    """Replace each named layer by its binary (or float) version, hooks included; returns the new root if the root was swapped."""
    for name, bconfig in configs.items():
        if not name:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        new = _swapped_or_named_error(name, old, bconfig, modules_mapping)
        if new is not old:
            setattr(parent, child, new)
    if "" in configs:
        return _swapped_or_named_error("", model, configs[""], modules_mapping)
    return model


def _swapped_or_named_error(name: str, module: nn.Module, bconfig: Optional[BConfig],
                            mapping: Mapping[type, type]) -> nn.Module:
    """:func:`_swapped`; a ``ValueError`` or ``TypeError`` from building the layer's processes names the layer."""
    try:
        return _swapped(module, bconfig, mapping)
    except (ValueError, TypeError) as exc:
        if type(exc) not in (ValueError, TypeError):  # a subclass may carry more than a message
            raise
        raise type(exc)(f"layer '{name or type(module).__name__}': {exc}") from None


def _mapping(modules_mapping: Optional[Mapping[type, type]]) -> Dict[type, type]:
    mapping = dict(DEFAULT_MODULES_MAPPING)
    for float_cls, binary_cls in (modules_mapping or {}).items():
        if not (isinstance(binary_cls, type) and issubclass(binary_cls, BinaryLayerMixin)):
            raise TypeError(
                f"modules_mapping[{getattr(float_cls, '__name__', float_cls)}] must be a bnn binary layer class "
                f"(a subclass of bnn.layers.BinaryLayerMixin), got {binary_cls!r}"
            )
        mapping[float_cls] = binary_cls
    return mapping


def prepare_binary_model(
    model: nn.Module,
    bconfig: Optional[BConfig],
    modules_mapping: Optional[Mapping[type, type]] = None,
    custom_config_layers_name: Optional[Mapping[str, BConfig]] = None,
    ignore_layers_name: Optional[Iterable[str]] = None,
) -> nn.Module:
    """Swap every ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Linear`` of ``model`` for a fake-binarized layer.

    Args:
        model: a float model (or an already prepared one: learned binarizer
            parameters whose shapes match are kept, for the next step of a recipe).
        bconfig: the global :class:`BConfig` (``None``: only attributes and
            overrides apply).
        modules_mapping: ``{float class: binary class}`` extending or
            overriding the default mapping; types match exactly.
        custom_config_layers_name: ``{name or '$regex$': BConfig}`` overrides.
        ignore_layers_name: names, ``'$regex$'``, ``'_first_'`` and ``'_last_'``
            (first and last swappable layer in definition order) kept float.

    Returns:
        ``model``, modified in place: swapped layers keep the very same
        ``weight`` and ``bias`` Parameter objects (device and dtype included).
        A bare layer comes back as its swapped layer.
    """
    mapping = _mapping(modules_mapping)
    configs, uncovered = _resolve(model, bconfig, mapping, custom_config_layers_name, ignore_layers_name)
    for message in uncovered:
        warnings.warn(message, UserWarning, stacklevel=2)
    return name_binarizers(swap_modules(model, configs, mapping))


def convert(model: nn.Module, modules_mapping: Optional[Mapping[type, type]] = None) -> nn.Module:
    """Swap the layers that carry a ``bconfig`` attribute, themselves or through an ancestor.

    The manual path: set ``module.bconfig = BConfig(...)`` at network creation
    (a parent's config covers its subtree), then call ``convert(model)``.
    """
    return prepare_binary_model(model, None, modules_mapping=modules_mapping)
