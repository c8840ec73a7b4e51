"""Switch all activation or all weight binarizers of a model on or off.

Staged schedules use it, such as NNCF's binarization recipe (activations binarized
from one epoch, weights from a later one; NNCF, "Neural Network Compression
Framework for fast model inference", Kozlov et al., arXiv:2002.08679, 2020)
and ReActNet's two-step training (Liu et al., ECCV 2020).
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from .layers import BinaryLayerMixin
from .ops import Binarizer

__all__ = ["set_binarization"]


def set_binarization(model: nn.Module, activations: Optional[bool] = None, weights: Optional[bool] = None) -> int:
    """Set ``enabled`` on every activation binarizer (``activation_pre_process``) and/or
    every weight binarizer (``weight_pre_process``) of the binary layers in ``model``.

    ``None`` leaves that kind unchanged. Output processes (scales) are not
    switched. Returns the number of binarizers whose flag was set.
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, BinaryLayerMixin):
            continue
        for slot, flag in (("activation_pre_process", activations), ("weight_pre_process", weights)):
            process = getattr(module, slot)
            if flag is not None and isinstance(process, Binarizer):
                process.enabled = bool(flag)
                count += 1
    return count
