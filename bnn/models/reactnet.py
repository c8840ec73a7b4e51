"""ReActNet-A: the MobileNet-v1-shaped binary network of Liu et al.,
"ReActNet: Towards Precise Binary Neural Network with Generalized Activation
Functions", ECCV 2020 (69.4% ImageNet top-1 with binary weights and activations).

Layout (channels for ``width_mult=1``): a float 3x3 stride-2 stem conv to 32
channels, then 13 blocks with outputs 64, 128, 128, 256, 256, 512 x 6, 1024 x 2
(stride 2 wherever the channel count doubles, except 32 -> 64), global average
pooling and a linear classifier. Each block is::

    y1 = act1(BN1(conv3x3(x)) + shortcut(x))      # shortcut: AvgPool2d(2) if stride 2
    y  = act2(BN2(conv1x1(y1)) + y1)               # same channels, or
    y  = act2(cat(BN2a(conv1x1_a(y1)) + y1,        # channels doubled: two 1x1 convs,
                  BN2b(conv1x1_b(y1)) + y1))       # outputs concatenated

with ``act`` = RPReLU by default. ReActNet's RSign (learnable per-channel shift
before the sign) is the binarizer's job here: prepare the model with
``bnn.ops.InputBiasBinarizer`` as activation pre-process. Unlike MobileNet-v1
the 3x3 convs are full (not depthwise) convolutions, as in the paper.

The model is plain float; ``model.float_layer_names()`` is
``["first_conv", "fc"]`` (the shortcuts hold no convs).
"""
from typing import List

import torch
import torch.nn as nn

from .common import check_choice, init_weights, make_activation

__all__ = ["ReActNetA", "reactnet_a", "STAGE_CHANNELS"]

STAGE_CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


class ReActBlock(nn.Module):
    """One ReActNet-A block (see the module docstring)."""

    def __init__(self, inplanes: int, planes: int, stride: int, activation: str):
        super().__init__()
        if planes not in (inplanes, 2 * inplanes):
            raise ValueError(f"ReActBlock needs planes == inplanes or 2*inplanes, got {inplanes} -> {planes}")
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.conv3x3 = nn.Conv2d(inplanes, inplanes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if stride == 2 else nn.Identity()
        self.act1 = make_activation(activation, inplanes)
        if planes == inplanes:
            self.conv1x1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.conv1x1_a = nn.Conv2d(inplanes, inplanes, 1, bias=False)
            self.conv1x1_b = nn.Conv2d(inplanes, inplanes, 1, bias=False)
            self.bn2_a = nn.BatchNorm2d(inplanes)
            self.bn2_b = nn.BatchNorm2d(inplanes)
        self.act2 = make_activation(activation, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.act1(self.bn1(self.conv3x3(x)) + self.pool(x))
        if self.planes == self.inplanes:
            out = self.bn2(self.conv1x1(out1)) + out1
        else:
            out = torch.cat([self.bn2_a(self.conv1x1_a(out1)) + out1,
                             self.bn2_b(self.conv1x1_b(out1)) + out1], dim=1)
        return self.act2(out)


class ReActNetA(nn.Module):
    """ReActNet-A (Liu et al. 2020).

    Args:
        num_classes: classifier outputs.
        width_mult: channel multiplier (1.0 = paper; 0.25 gives a CIFAR-test-sized net).
        activation: ``"rprelu"`` (paper), ``"prelu"``, ``"relu"``, ``"hardtanh"`` or ``"identity"``.
        stem: ``"imagenet"`` (stride-2 first conv) or ``"cifar"`` (stride 1, for 32x32 inputs).
        in_channels: input image channels.

    Module names: ``first_conv``, ``first_bn``, ``blocks.0`` ... ``blocks.12``, ``avgpool``, ``fc``.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, activation: str = "rprelu",
                 stem: str = "imagenet", in_channels: int = 3):
        super().__init__()
        check_choice(stem, ("imagenet", "cifar"), "stem")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        ch = [max(1, int(round(c * width_mult))) for c in STAGE_CHANNELS]
        # keep the "double or equal" structure exact after rounding
        for i in range(1, len(ch)):
            ch[i] = 2 * ch[i - 1] if STAGE_CHANNELS[i] == 2 * STAGE_CHANNELS[i - 1] else ch[i - 1]
        self.channels = ch
        self.num_classes = int(num_classes)
        self.first_conv = nn.Conv2d(in_channels, ch[0], 3, stride=2 if stem == "imagenet" else 1,
                                    padding=1, bias=False)
        self.first_bn = nn.BatchNorm2d(ch[0])
        blocks: List[nn.Module] = []
        for i in range(1, len(ch)):
            stride = 2 if (ch[i] != ch[i - 1] and STAGE_CHANNELS[i] != 64) else 1
            blocks.append(ReActBlock(ch[i - 1], ch[i], stride, activation))
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.first_bn(self.first_conv(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def float_layer_names(self, downsample: bool = True) -> List[str]:
        """``["first_conv", "fc"]``: ReActNet's shortcuts are pooling only."""
        return ["first_conv", "fc"]


def reactnet_a(num_classes: int = 1000, width_mult: float = 1.0, activation: str = "rprelu",
               **kwargs) -> ReActNetA:
    """ReActNet-A (Liu et al., ECCV 2020); see :class:`ReActNetA`."""
    return ReActNetA(num_classes=num_classes, width_mult=width_mult, activation=activation, **kwargs)
