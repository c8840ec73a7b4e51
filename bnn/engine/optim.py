"""Optimizers with parameter groups for binary networks.

A binary network has four kinds of parameters that want different weight decay
(and sometimes a different learning rate):

* ``latent_weights``: the float ``weight`` of a binary layer whose
  ``weight_pre_process`` is not the identity. Only ``sign(W)`` (times a scale)
  reaches the forward pass, so an L2 penalty pulls latent weights towards 0 and
  makes signs flip at random; the best recipes (ReActNet, Liu et al. 2020; the
  NNCF ResNet-18 schedule) use no or very small weight decay on them.
* ``binarizer``: the learnable parameters of the binarizers themselves
  (``bnn.ops.Binarizer`` submodules of binary layers: RSign shifts, NNCF
  scale/threshold, output scales).
* ``bn_bias``: the affine parameters of normalization layers and every
  parameter called ``bias``; decaying them only hurts (Goyal et al. 2017).
* ``rest``: everything else (float first/last layers, PReLU slopes, ...).

:func:`build_optimizer` turns the ``OPTIMIZER`` section of a :class:`~bnn.engine.Config` into an
``Adam``, ``AdamW`` or ``SGD`` optimizer with one param group per non-empty
kind; every group carries ``name`` and ``initial_weight_decay`` (used to switch
weight decay off and back on, see :func:`set_weight_decay_enabled`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..hints import did_you_mean
from ..layers import BinaryLayerMixin
from ..ops import Binarizer

__all__ = [
    "GROUP_NAMES",
    "OPTIMIZERS",
    "classify_parameters",
    "param_groups",
    "build_optimizer",
    "set_weight_decay_enabled",
]

GROUP_NAMES = ("latent_weights", "binarizer", "bn_bias", "rest")
OPTIMIZERS = ("adam", "adamw", "sgd")

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
_PROCESS_ATTRS = ("activation_pre_process", "weight_pre_process", "activation_post_process")


def classify_parameters(model: nn.Module) -> "OrderedDict[str, List[Tuple[str, nn.Parameter]]]":
    """Split the trainable parameters of ``model`` into the four kinds of :data:`GROUP_NAMES`.

    Returns an ordered dict ``kind -> [(qualified_name, parameter), ...]``; every
    parameter with ``requires_grad`` appears exactly once (shared parameters are
    counted at their first name).
    """
    kind_of: Dict[int, str] = {}

    # 1. binarizer parameters: everything under the pre/post processes of binary
    #    layers, plus any Binarizer instance elsewhere in the model.
    for _, module in model.named_modules():
        if isinstance(module, BinaryLayerMixin):
            for attr in _PROCESS_ATTRS:
                sub = getattr(module, attr, None)
                if isinstance(sub, nn.Module):
                    for p in sub.parameters():
                        kind_of.setdefault(id(p), "binarizer")
            wpre = getattr(module, "weight_pre_process", None)
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and wpre is not None and not isinstance(wpre, nn.Identity):
                kind_of.setdefault(id(weight), "latent_weights")
        elif isinstance(module, Binarizer):
            for p in module.parameters():
                kind_of.setdefault(id(p), "binarizer")
    # 2. normalization layers and biases.
    for _, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in kind_of:
                continue
            if isinstance(module, _NORM_TYPES) or pname == "bias":
                kind_of[id(p)] = "bn_bias"

    groups: "OrderedDict[str, List[Tuple[str, nn.Parameter]]]" = OrderedDict((g, []) for g in GROUP_NAMES)
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        groups[kind_of.get(id(p), "rest")].append((name, p))
    return groups


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    weight_decays: Optional[Dict[str, Optional[float]]] = None,
    lr_multipliers: Optional[Dict[str, float]] = None,
) -> List[dict]:
    """Optimizer param groups, one per non-empty kind of :func:`classify_parameters`.

    ``weight_decays`` maps a kind to its weight decay (``None`` or missing: use
    ``weight_decay``); ``lr_multipliers`` maps a kind to a factor on ``lr``.
    Each group dict has ``params``, ``lr``, ``weight_decay``, ``name``,
    ``initial_weight_decay`` and ``param_names``.
    """
    weight_decays = dict(weight_decays or {})
    lr_multipliers = dict(lr_multipliers or {})
    for key in list(weight_decays) + list(lr_multipliers):
        if key not in GROUP_NAMES:
            raise ValueError(f"unknown parameter group {key!r}" + did_you_mean(key, GROUP_NAMES))
    out = []
    for kind, named in classify_parameters(model).items():
        if not named:
            continue
        wd = weight_decays.get(kind)
        wd = float(weight_decay if wd is None else wd)
        out.append(
            {
                "params": [p for _, p in named],
                "param_names": [n for n, _ in named],
                "name": kind,
                "lr": float(lr) * float(lr_multipliers.get(kind, 1.0)),
                "weight_decay": wd,
                "initial_weight_decay": wd,
            }
        )
    return out


def build_optimizer(model: nn.Module, opt) -> torch.optim.Optimizer:
    """``Adam`` / ``AdamW`` / ``SGD`` over :func:`param_groups` of ``model``, from an ``OPTIMIZER`` section
    (:class:`~bnn.engine.schema.OptimizerCfg`): ``NAME``, ``LR``, ``WEIGHT_DECAY``, each group's
    ``WEIGHT_DECAY`` (None: ``OPTIMIZER.WEIGHT_DECAY``) and ``LR_MULT``, ``MOMENTUM``/``NESTEROV`` (SGD),
    ``BETAS``/``EPS`` (Adam, AdamW).
    """
    name = str(opt.NAME).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt.NAME!r}" + did_you_mean(name, OPTIMIZERS))
    sections = {group: getattr(opt, group.upper()) for group in GROUP_NAMES}
    groups = param_groups(model, lr=opt.LR, weight_decay=opt.WEIGHT_DECAY,
                          weight_decays={group: s.WEIGHT_DECAY for group, s in sections.items()},
                          lr_multipliers={group: s.LR_MULT for group, s in sections.items()})
    if not groups:
        raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False)")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=opt.LR, momentum=opt.MOMENTUM, nesterov=opt.NESTEROV)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=opt.LR, betas=tuple(opt.BETAS), eps=opt.EPS)


def set_weight_decay_enabled(optimizer: torch.optim.Optimizer, enabled: bool) -> None:
    """Set every group's ``weight_decay`` to its ``initial_weight_decay`` (enabled) or to 0."""
    for group in optimizer.param_groups:
        initial = group.setdefault("initial_weight_decay", group.get("weight_decay", 0.0))
        group["weight_decay"] = float(initial) if enabled else 0.0
