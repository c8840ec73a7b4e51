"""Fake-binarized linear layer: ``post(linear(pre(x), wpre(W), b), x)``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import BConfig
from .binary_layer import BinaryLayerMixin

__all__ = ["Linear"]


class Linear(BinaryLayerMixin, nn.Linear):
    """``nn.Linear`` with the processes of a :class:`~bnn.BConfig` (identity by default)."""

    _FLOAT_MODULE = nn.Linear

    def __init__(self, *args, bconfig: Optional[BConfig] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._build_processes(bconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._binary_forward(x, F.linear)
