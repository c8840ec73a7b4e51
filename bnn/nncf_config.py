"""Read the binarization algorithm config of NNCF (OpenVINO's Neural Network
Compression Framework; Kozlov et al., "Neural Network Compression Framework
for fast model inference", arXiv:2002.08679, 2020).

``from_nncf_config(model, config)`` binarizes the ``Conv2d`` layers of ``model``
(only those, as NNCF does) with ``ScaleThresholdBinarizer`` inputs and XNOR
(per output channel) or DoReFa (per tensor) weights, honouring
``ignored_scopes`` / ``target_scopes``, and returns the schedule parameters
(``bnn.engine.steps.nncf_recipe`` puts them into a training config).

A scope such as ``ResNet/Sequential[layer2]/BasicBlock[0]/Sequential[downsample]``
names the module ``layer2.0.downsample``: the first element is the model class,
each further ``Type[name]`` element one attribute; a scope covers its subtree.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch.nn as nn

from .config import BConfig
from .hints import did_you_mean
from .layers import Conv2d
from .ops import DoReFaWeightBinarizer, ScaleThresholdBinarizer, XNORWeightBinarizer
from .prepare import propagate_bconfig, swap_modules

__all__ = ["NNCFSchedule", "from_nncf_config", "load_nncf_config", "scope_to_module_name"]


@dataclasses.dataclass
class NNCFSchedule:
    """NNCF's staged binarization schedule (epochs counted from 0).

    Activations are binarized from ``activations_bin_start_epoch``, weights from
    ``weights_bin_start_epoch``; from ``lr_poly_drop_start_epoch`` the learning
    rate follows ``base * ((end - epoch) / duration) ** 2.1`` with
    ``end = start + lr_poly_drop_duration_epochs``; weight decay is 0 from
    ``disable_wd_start_epoch``; gradients accumulate over ``batch_multiplier`` batches.
    """

    activations_bin_start_epoch: int = 1
    weights_bin_start_epoch: int = 1
    lr_poly_drop_start_epoch: int = 30
    lr_poly_drop_duration_epochs: int = 30
    disable_wd_start_epoch: int = 30
    batch_multiplier: int = 1


_PARAM_ALIASES = {
    "activations_quant_start_epoch": "activations_bin_start_epoch",
    "weights_quant_start_epoch": "weights_bin_start_epoch",
}
_TOP_KEYS = {"algorithm", "mode", "params", "ignored_scopes", "target_scopes"}
_MODES = {"xnor": XNORWeightBinarizer, "dorefa": DoReFaWeightBinarizer}


def _strip_json_comments(text: str) -> str:
    """Remove ``//`` comments (outside strings), as NNCF's documented configs carry them."""
    out_lines = []
    for line in text.splitlines():
        in_string = False
        cut = len(line)
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_string = not in_string
            elif not in_string and line.startswith("//", i):
                cut = i
                break
        out_lines.append(line[:cut])
    text = "\n".join(out_lines)
    return re.sub(r",(\s*[}\]])", r"\1", text)  # trailing commas left behind by removed lines


def load_nncf_config(config: Union[str, os.PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """A config dict from a dict, a JSON file (``//`` comments allowed) or a YAML file."""
    if isinstance(config, Mapping):
        data = dict(config)
    else:
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"NNCF config file not found: {path}")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            if path.endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(_strip_json_comments(text))
        except Exception as exc:  # noqa: BLE001 - parse errors of two libraries
            raise ValueError(f"{path}: cannot parse NNCF config: {exc}") from None
    if isinstance(data, Mapping) and "compression" in data:  # a full NNCF config
        compression = data["compression"]
        compression = compression if isinstance(compression, list) else [compression]
        found = [c for c in compression if c.get("algorithm") == "binarization"]
        if not found:
            raise ValueError("NNCF config: no 'compression' entry with algorithm 'binarization'")
        data = found[0]
    if not isinstance(data, Mapping):
        raise ValueError("NNCF config: expected a mapping with 'algorithm': 'binarization'")
    return dict(data)


def scope_to_module_name(scope: str) -> str:
    """``'ResNet/Sequential[layer2]/BasicBlock[0]'`` -> ``'layer2.0'``."""
    parts = [p for p in scope.strip().split("/") if p]
    names = []
    for part in parts[1:]:
        match = re.fullmatch(r"[^\[\]]*\[([^\[\]]+)\]", part)
        if not match:
            raise ValueError(f"NNCF scope {scope!r}: element {part!r} is not of the form Type[name]")
        names.append(match.group(1))
    return ".".join(names)


def _scope_names(model: nn.Module, scopes: List[str], key: str) -> List[str]:
    modules = dict(model.named_modules())
    names = []
    for scope in scopes:
        name = scope_to_module_name(scope)
        if name not in modules:
            raise ValueError(f"NNCF config {key}: scope {scope!r} (module {name!r}) is not in the model"
                             + did_you_mean(name, [n for n in modules if n], list_all=False))
        names.append(name)
    return names


def from_nncf_config(model: nn.Module, config: Union[str, os.PathLike, Mapping[str, Any]]) -> Tuple[nn.Module, NNCFSchedule]:
    """Prepare ``model`` as NNCF's binarization algorithm would; return it and its :class:`NNCFSchedule`.

    ``config`` is the algorithm section (or a whole NNCF config with a
    ``compression`` list), as a dict or a JSON/YAML file. ``mode`` is ``xnor``
    (default) or ``dorefa``; ``params`` accepts both the ``*_bin_start_epoch``
    and ``*_quant_start_epoch`` spellings.
    """
    cfg = load_nncf_config(config)
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"NNCF config: unknown key {key!r}" + did_you_mean(key, _TOP_KEYS))
    if cfg.get("algorithm", "binarization") != "binarization":
        raise ValueError(f"NNCF config: algorithm must be 'binarization', got {cfg['algorithm']!r}")
    mode = str(cfg.get("mode", "xnor")).lower()
    if mode not in _MODES:
        raise ValueError(f"NNCF config: unknown mode {cfg.get('mode')!r}" + did_you_mean(mode, _MODES))

    fields = {f.name for f in dataclasses.fields(NNCFSchedule)}
    params = {}
    for key, value in dict(cfg.get("params") or {}).items():
        name = _PARAM_ALIASES.get(key, key)
        if name not in fields:
            raise ValueError(f"NNCF config: unknown params key {key!r}" + did_you_mean(key, fields | set(_PARAM_ALIASES)))
        params[name] = int(value)
    schedule = NNCFSchedule(**params)

    ignored = _scope_names(model, list(cfg.get("ignored_scopes") or []), "ignored_scopes")
    targets = _scope_names(model, list(cfg.get("target_scopes") or []), "target_scopes")
    bconfig = BConfig(activation_pre_process=ScaleThresholdBinarizer, weight_pre_process=_MODES[mode])
    custom = {}
    if targets:  # allowlist: only the target subtrees are binarized
        custom = {name: bconfig for name in targets}
        bconfig = None
    mapping = {nn.Conv2d: Conv2d}  # NNCF binarizes Conv2d only
    configs = propagate_bconfig(model, bconfig, mapping, custom, ignored)
    return swap_modules(model, configs, mapping), schedule
