"""Switch all activation or all weight binarizers of a model on or off.

Staged schedules use it, such as NNCF's binarization recipe (activations binarized
from one epoch, weights from a later one; NNCF, "Neural Network Compression
Framework for fast model inference", Kozlov et al., arXiv:2002.08679, 2020)
and ReActNet's two-step training (Liu et al., ECCV 2020).
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch.nn as nn

from .layers import BinaryLayerMixin
from .ops import Binarizer

__all__ = ["set_binarization", "binarizes"]


def _binarizers(model: nn.Module) -> Iterator[Tuple[str, Binarizer]]:
    """``(slot, binarizer)`` for each activation and weight binarizer of the binary layers in ``model``."""
    for module in model.modules():
        if isinstance(module, BinaryLayerMixin):
            for slot in ("activation_pre_process", "weight_pre_process"):
                process = getattr(module, slot)
                if isinstance(process, Binarizer):
                    yield slot, process


def set_binarization(model: nn.Module, activations: Optional[bool] = None, weights: Optional[bool] = None) -> int:
    """Set ``enabled`` on every activation binarizer (``activation_pre_process``) and/or
    every weight binarizer (``weight_pre_process``) of the binary layers in ``model``.

    ``None`` leaves that kind unchanged. Output processes (scales) are not
    switched. Returns the number of binarizers whose flag was set.
    """
    flags = {"activation_pre_process": activations, "weight_pre_process": weights}
    count = 0
    for slot, process in _binarizers(model):
        if flags[slot] is not None:
            process.enabled = bool(flags[slot])
            count += 1
    return count


def binarizes(model: nn.Module) -> bool:
    """Whether any layer of ``model`` binarizes its input or its weights (an enabled binarizer)."""
    return any(process.enabled for _, process in _binarizers(model))
