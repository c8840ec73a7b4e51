"""VGG-small, the CIFAR-10 network of many binary-network papers
(Zhang et al., "LQ-Nets: Learned Quantization for Highly Accurate and Compact
Deep Neural Networks", ECCV 2018; also IR-Net, RBNN, ReCU ...).

Layout: ``128C3 - 128C3 - MP2 - 256C3 - 256C3 - MP2 - 512C3 - 512C3 - MP2 - FC``.
Each conv is followed (after the pooling where there is one) by BN and the
activation; the classifier sees the flattened ``512 x (S/8) x (S/8)`` map
(8192 features at 32x32). ``first_conv`` and ``fc`` stay float in binary
recipes (``model.float_layer_names()``).
"""
from typing import List, Optional

import torch
import torch.nn as nn

from .common import init_weights, make_activation

__all__ = ["VGGSmall", "vgg_small"]


class VGGSmall(nn.Module):
    """VGG-small (LQ-Nets, 2018).

    Args:
        num_classes: classifier outputs.
        width_mult: channel multiplier (1.0 = 128/256/512 channels).
        activation: ``"relu"`` (default), ``"hardtanh"``, ``"prelu"``, ``"rprelu"`` or ``"identity"``.
        in_channels: image channels (3 for CIFAR, 1 for MNIST).
        input_size: image side (e.g. 28 for MNIST) fixing the ``fc`` input to ``512 x (S/8)^2``;
            None (default): the last map is adaptively pooled to 4x4, exact for 32x32 and
            working for any size.

    Module names: ``first_conv``, ``bn0``/``act0``, ``conv1`` ... ``conv5`` with
    ``bn1``/``act1`` ..., pools ``pool1``, ``pool3``, ``pool5``, and ``fc``.
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, activation: str = "relu",
                 in_channels: int = 3, input_size: Optional[int] = None):
        super().__init__()
        c1, c2, c3 = (max(1, int(round(c * width_mult))) for c in (128, 256, 512))
        chans = [c1, c1, c2, c2, c3, c3]
        self.num_classes = int(num_classes)
        self.first_conv = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c1)
        self.act0 = make_activation(activation, c1)
        for i in range(1, 6):
            self.add_module(f"conv{i}", nn.Conv2d(chans[i - 1], chans[i], 3, padding=1, bias=False))
            if i in (1, 3, 5):
                self.add_module(f"pool{i}", nn.MaxPool2d(2, 2))
            self.add_module(f"bn{i}", nn.BatchNorm2d(chans[i]))
            self.add_module(f"act{i}", make_activation(activation, chans[i]))
        if input_size is None:
            # any input size: the last map is average-pooled to 4x4 (a no-op for 32x32 inputs)
            side, self.pool_out = 4, nn.AdaptiveAvgPool2d(4)
        else:
            side, self.pool_out = int(input_size) // 8, nn.Identity()
            if side < 1:
                raise ValueError(f"VGGSmall needs input_size >= 8, got {input_size}")
        self.fc = nn.Linear(c3 * side * side, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.first_conv(x)))
        for i in range(1, 6):
            x = getattr(self, f"conv{i}")(x)
            if i in (1, 3, 5):
                x = getattr(self, f"pool{i}")(x)
            x = getattr(self, f"act{i}")(getattr(self, f"bn{i}")(x))
        return self.fc(torch.flatten(self.pool_out(x), 1))

    def float_layer_names(self, downsample: bool = True) -> List[str]:
        """``["first_conv", "fc"]``."""
        return ["first_conv", "fc"]


def vgg_small(num_classes: int = 10, **kwargs) -> VGGSmall:
    """VGG-small (LQ-Nets, ECCV 2018); see :class:`VGGSmall`."""
    return VGGSmall(num_classes=num_classes, **kwargs)
