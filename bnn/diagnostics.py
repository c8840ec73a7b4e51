"""What each binarized layer's input binarizer does with real data: dead and saturated layers made visible.

A sign binarizer whose input is all on one side of its threshold (a ReLU in
front of ``sign``) emits a constant and its layer carries no information;
:func:`diagnose` runs one batch and reports, per binarized layer, the fraction
of the input binarizer's outputs at the high level (+1 of a sign, s of NNCF's
``{0, s}``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, List

import torch
import torch.nn as nn

from .layers import BinaryLayerMixin
from .ops import Binarizer, ScaleThresholdBinarizer

__all__ = ["InputBinarizerStats", "diagnose"]

DEAD_LIMIT = Binarizer.SATURATION_LIMIT  # the limit of the training-time warning


@dataclasses.dataclass
class InputBinarizerStats:
    """One binarized layer: its name, its input binarizer's class, the fraction of +1 (high) outputs."""

    layer: str
    binarizer: str
    high_fraction: float

    @property
    def dead(self) -> bool:
        """More than 99 % of the outputs on one side: the layer receives an (almost) constant input."""
        return max(self.high_fraction, 1.0 - self.high_fraction) > DEAD_LIMIT


def _binary_output(pre: nn.Module) -> bool:
    return isinstance(pre, Binarizer) and pre.enabled and (
        pre.sign_threshold() is not None or isinstance(pre, ScaleThresholdBinarizer))


def diagnose(model: nn.Module, batch: Any, print_fn=print) -> List[InputBinarizerStats]:
    """Run ``model(batch)`` without gradients and report each binarized layer's fraction of +1 inputs.

    ``batch`` is what ``model`` takes (a tensor, or a tuple passed as
    positional arguments). The model runs in its current mode: eval for a
    trained model; in training mode (a fresh model, whose BatchNorm running
    statistics mean nothing yet) BatchNorm uses and updates batch statistics,
    as in a training step. One row per layer whose input binarizer emits two
    levels (a sign, or NNCF's ``{0, s}``): the layer name, the binarizer, the
    percentage of its outputs at the high level, and ``DEAD`` where more than
    99 % are on one side. Prints through ``print_fn`` (``None``: silent) and
    returns the rows.
    """
    stats: dict = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, BinaryLayerMixin) and _binary_output(module.activation_pre_process):
            def count(pre, inputs, output, name=name):
                high, total = stats.get(name, (0, 0))
                stats[name] = (high + int((output > 0).sum()), total + output.numel())

            handles.append(module.activation_pre_process.register_forward_hook(count))
    try:
        with torch.no_grad():
            model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
    finally:
        for handle in handles:
            handle.remove()
    rows = [
        InputBinarizerStats(name, type(model.get_submodule(name).activation_pre_process).__name__, high / max(1, total))
        for name, (high, total) in stats.items()
    ]
    if print_fn is not None:
        header = f"{'layer':<36} {'input binarizer':<26} {'+1 inputs':>9}"
        lines = [header, "-" * len(header)]
        for row in rows:
            flag = "  DEAD: (almost) constant input" if row.dead else ""
            lines.append(f"{row.layer:<36.36} {row.binarizer:<26.26} {100.0 * row.high_fraction:>8.1f}%{flag}")
        print_fn("\n".join(lines))
    return rows
