"""Fake-binarized convolutions: ``post(conv(pre(x), wpre(W), b), x)``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..config import BConfig
from .binary_layer import BinaryLayerMixin

__all__ = ["Conv1d", "Conv2d"]


class _BinaryConvNd(BinaryLayerMixin):
    def __init__(self, *args, bconfig: Optional[BConfig] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._build_processes(bconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._binary_forward(x, self._conv_forward)


class Conv1d(_BinaryConvNd, nn.Conv1d):
    """``nn.Conv1d`` with the processes of a :class:`~bnn.BConfig` (identity by default)."""

    _FLOAT_MODULE = nn.Conv1d


class Conv2d(_BinaryConvNd, nn.Conv2d):
    """``nn.Conv2d`` with the processes of a :class:`~bnn.BConfig` (identity by default)."""

    _FLOAT_MODULE = nn.Conv2d
