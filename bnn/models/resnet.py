"""Binary-friendly ResNet-18 / ResNet-34.

ResNet: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
Block variants for binary networks:

* ``"basic"``: the standard basic block (conv-BN-act-conv-BN, add, act), same
  structure and parameter count as ``torchvision.models.resnet18``.
* ``"bn_first"`` (the BN-first block; its earlier name in :data:`BLOCK_ALIASES` still works):
  per conv ``act(conv(BN(x)) + shortcut(x))``, i.e. BatchNorm, binary
  activation, binary conv, residual add, PReLU. The binary activation sits in
  front of the conv, inside the binary conv produced by
  ``prepare_binary_model``, so the binarizer sees a batch-normalised,
  zero-centred input. Two such single-conv blocks replace each basic block
  (a shortcut around every conv, as in Bi-Real Net). BatchNorm before the
  binary activation is XNOR-Net's order (Rastegari et al., "XNOR-Net: ImageNet
  Classification Using Binary Convolutional Neural Networks", ECCV 2016); the
  PReLU after the add follows Martinez et al., "Training Binary Neural Networks
  with Real-to-Binary Convolutions" (ICLR 2020).
* ``"bireal"``: Bi-Real Net (Liu et al., "Bi-Real Net: Enhancing the
  Performance of 1-bit CNNs", ECCV 2018): a shortcut around every conv,
  ``act(BN(conv(x)) + x)`` twice per basic block.
* ``"preact"``: the pre-activation block (He et al., "Identity Mappings in Deep
  Residual Networks", ECCV 2016): ``conv(act(BN(conv(act(BN(x)))))) + shortcut(x)``.
  Note: with ``activation="relu"`` the inputs of the binary convs are >= 0, so a
  sign binarizer sees only +1; use ``"prelu"``, ``"rprelu"`` or ``"identity"``
  for binary training.

Activations: ``"relu"``, ``"prelu"``, ``"rprelu"`` (ReActNet's shift-PReLU-shift,
see :class:`bnn.models.common.RPReLU`), ``"hardtanh"``, ``"identity"``.

Downsample shortcuts: a 1x1 stride-s conv + BN (torchvision), or with
``fp_downsample=True`` the full-precision-friendly AvgPool2d(2) + 1x1 stride-1
conv + BN of Bi-Real Net / ReActNet (Liu et al. 2018, 2020). The conv always sits at the
same index (``downsample.0`` or ``downsample.1`` respectively).

Stems: ``"imagenet"`` = 7x7 stride-2 conv + BN + act + 3x3 stride-2 max pool;
``"cifar"`` = 3x3 stride-1 conv + BN + act, no pool (the usual stem for 32x32
inputs, keeping the 4 stages at 32, 16, 8 and 4 pixels).

The models are plain float modules (``nn.Conv2d``, ``nn.Linear``): make them
binary with :func:`bnn.prepare_binary_model`, keeping
``model.float_layer_names()`` (``"first_conv"``, ``"fc"`` and the downsample
convs) full precision.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .common import check_choice, init_weights, make_activation

__all__ = ["ResNet", "resnet18", "resnet34", "BLOCKS", "BLOCK_ALIASES", "STEMS"]

BLOCKS = ("basic", "bn_first", "bireal", "preact")
#: earlier names of the blocks, still accepted (``ResNet.block_type`` holds the current name)
BLOCK_ALIASES = {"seed003": "bn_first"}
STEMS = ("imagenet", "cifar")
_DEFAULT_ACTIVATION = {"basic": "relu", "preact": "relu", "bn_first": "prelu", "bireal": "prelu"}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def make_downsample(inplanes: int, planes: int, stride: int, fp_downsample: bool) -> Optional[nn.Sequential]:
    """Shortcut projection, or None when the identity fits.

    ``fp_downsample=False``: ``Sequential(conv1x1(stride), BN)`` (torchvision).
    ``fp_downsample=True``: ``Sequential(AvgPool2d(2) or Identity, conv1x1, BN)``
    (Bi-Real Net / ReActNet; the spatial reduction is done by the pooling).
    """
    if stride == 1 and inplanes == planes:
        return None
    if not fp_downsample:
        return nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    pool = (nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False)
            if stride != 1 else nn.Identity())
    return nn.Sequential(pool, conv1x1(inplanes, planes), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """Standard basic block: ``act2(BN(conv(act1(BN(conv(x))))) + shortcut(x))``."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 activation: str):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation, planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class DoubleSkipBlock(nn.Module):
    """Two single-conv residual blocks (a shortcut around every conv).

    ``bn_first=True`` (the BN-first block): ``y = act(conv(BN(x)) + shortcut(x))``;
    ``bn_first=False`` (Bi-Real Net): ``y = act(BN(conv(x)) + shortcut(x))``.
    The first of the two carries the stride / channel change and the
    ``downsample`` shortcut, the second has an identity shortcut.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 activation: str, bn_first: bool):
        super().__init__()
        self.bn_first = bn_first
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(inplanes if bn_first else planes)
        self.act1 = make_activation(activation, planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation, planes)
        self.downsample = downsample

    def _unit(self, x, conv, bn):
        return conv(bn(x)) if self.bn_first else bn(conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self._unit(x, self.conv1, self.bn1) + identity)
        return self.act2(self._unit(out, self.conv2, self.bn2) + out)


class PreActBlock(nn.Module):
    """Pre-activation block: ``conv2(act2(BN2(conv1(act1(BN1(x)))))) + shortcut(x)``."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 activation: str):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = make_activation(activation, inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation, planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        return out + identity


class ResNet(nn.Module):
    """Binary-friendly ResNet (see the module docstring for every option).

    Args:
        layers: blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-34.
        num_classes: size of the classifier ``fc``.
        block: ``"basic"``, ``"bn_first"``, ``"bireal"`` or ``"preact"`` (or an alias in ``BLOCK_ALIASES``).
        activation: ``"relu"``, ``"prelu"``, ``"rprelu"``, ``"hardtanh"``, ``"identity"``;
            None picks ``"rprelu"`` if ``rprelu`` else the block's default
            (ReLU for basic/preact, PReLU for bn_first/bireal).
        rprelu: shorthand for ``activation="rprelu"`` (the call of the original
            binary-networks-pytorch toolkit, ``resnet18(num_classes, rprelu)``).
        stem: ``"imagenet"`` (7x7/2 conv + max pool) or ``"cifar"`` (3x3/1 conv, no pool).
        fp_downsample: AvgPool2d(2) + 1x1 conv + BN shortcuts instead of a strided 1x1 conv.
        in_channels: input image channels.
        width: channels of the first stage (64 in the paper); stages use width * (1, 2, 4, 8).

    Module names: ``first_conv``, ``first_bn``, ``first_act``, ``maxpool``,
    ``layer1`` ... ``layer4``, (``final_bn``, ``final_act`` for preact),
    ``avgpool``, ``fc``.
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
                 block: str = "basic", activation: Optional[str] = None, rprelu: bool = False,
                 stem: str = "imagenet", fp_downsample: bool = False, in_channels: int = 3,
                 width: int = 64):
        super().__init__()
        block = BLOCK_ALIASES.get(block, block)
        check_choice(block, BLOCKS, "block")
        check_choice(stem, STEMS, "stem")
        if rprelu:
            if activation not in (None, "rprelu"):
                raise ValueError(f"rprelu=True conflicts with activation={activation!r}; pass only one of them")
            activation = "rprelu"
        if activation is None:
            activation = _DEFAULT_ACTIVATION[block]
        self.block_type = block
        self.activation = activation
        self.stem_type = stem
        self.fp_downsample = bool(fp_downsample)
        self.num_classes = int(num_classes)

        if stem == "imagenet":
            self.first_conv = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            self.first_conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.first_bn = nn.BatchNorm2d(width)
        self.first_act = make_activation(activation, width)
        self.maxpool = (nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                        if stem == "imagenet" else nn.Identity())

        self.inplanes = width
        planes = [width, width * 2, width * 4, width * 8]
        for i, (n, p) in enumerate(zip(layers, planes)):
            stage = self._make_stage(p, int(n), stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        if block == "preact":
            self.final_bn = nn.BatchNorm2d(self.inplanes)
            self.final_act = make_activation(activation, self.inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        init_weights(self)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods: List[nn.Module] = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            ds = make_downsample(self.inplanes, planes, s, self.fp_downsample)
            if self.block_type == "basic":
                mods.append(BasicBlock(self.inplanes, planes, s, ds, self.activation))
            elif self.block_type == "preact":
                mods.append(PreActBlock(self.inplanes, planes, s, ds, self.activation))
            else:
                mods.append(DoubleSkipBlock(self.inplanes, planes, s, ds, self.activation,
                                            bn_first=self.block_type == "bn_first"))
            self.inplanes = planes
        return nn.Sequential(*mods)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.first_act(self.first_bn(self.first_conv(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.block_type == "preact":
            x = self.final_act(self.final_bn(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def float_layer_names(self, downsample: bool = True) -> List[str]:
        """Layers recipes keep full precision: ``first_conv``, ``fc`` and, if
        ``downsample``, every 1x1 conv of a downsample shortcut."""
        names = ["first_conv", "fc"]
        if downsample:
            names += [n for n, m in self.named_modules()
                      if ".downsample." in n and isinstance(m, nn.Conv2d)]
        return names

    def load_torchvision_state_dict(self, state_dict: Dict[str, torch.Tensor], strict: bool = True):
        """Loads a ``torchvision.models.resnet18/34`` state dict (e.g. ImageNet
        weights for a pretrained start, as NNCF's and the gradual-binarization
        recipes begin): renames ``conv1``/``bn1``
        of the stem to ``first_conv``/``first_bn``. Needs ``block="basic"``,
        ``fp_downsample=False`` and a non-learnable activation to match exactly
        (with PReLU/RPReLU use ``strict=False``)."""
        remap = {}
        for k, v in state_dict.items():
            if k.startswith("conv1."):
                k = "first_conv." + k[len("conv1."):]
            elif k.startswith("bn1."):
                k = "first_bn." + k[len("bn1."):]
            remap[k] = v
        return self.load_state_dict(remap, strict=strict)


def resnet18(num_classes: int = 1000, rprelu: bool = False, **kwargs) -> ResNet:
    """ResNet-18 (He et al. 2016), binary-friendly options as in :class:`ResNet`.

    ``resnet18(num_classes=1000, rprelu=False)`` is the original binary-networks-pytorch call."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, rprelu=rprelu, **kwargs)


def resnet34(num_classes: int = 1000, rprelu: bool = False, **kwargs) -> ResNet:
    """ResNet-34 (He et al. 2016), binary-friendly options as in :class:`ResNet`."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, rprelu=rprelu, **kwargs)
