"""Building blocks shared by the binary-friendly model zoo.

Everything here is a plain float module: binarization happens later, when
:func:`bnn.prepare_binary_model` swaps the ``nn.Conv2d`` / ``nn.Linear`` layers
of a model for their binary counterparts.
"""
from typing import Iterable, List, Optional

import torch
import torch.nn as nn

from ..hints import did_you_mean
from ..prepare import DEFAULT_MODULES_MAPPING

__all__ = [
    "RPReLU",
    "ACTIVATIONS",
    "make_activation",
    "check_choice",
    "float_layer_names",
]


class RPReLU(nn.Module):
    r"""RPReLU, the shifted PReLU of ReActNet (Liu et al., "ReActNet: Towards
    Precise Binary Neural Network with Generalized Activation Functions", ECCV 2020).

    Per channel ``c``, with learnable ``gamma_c`` (``shift_in``), ``beta_c``
    (``slope``, init 0.25 as in PReLU) and ``zeta_c`` (``shift_out``)::

        y = x - gamma_c + zeta_c            if x - gamma_c >= 0
        y = beta_c * (x - gamma_c) + zeta_c otherwise

    i.e. a learnable shift, a PReLU, and a second learnable shift. Both shifts
    start at 0, so at initialisation RPReLU equals ``nn.PReLU(C, init)``.
    Works on ``[N, C, ...]`` inputs (channel dimension 1).
    """

    def __init__(self, num_channels: int, init: float = 0.25):
        super().__init__()
        self.num_channels = int(num_channels)
        self.shift_in = nn.Parameter(torch.zeros(self.num_channels))
        self.slope = nn.Parameter(torch.full((self.num_channels,), float(init)))
        self.shift_out = nn.Parameter(torch.zeros(self.num_channels))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return p.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"RPReLU({self.num_channels}) got input of shape {tuple(x.shape)}: "
                f"dimension 1 must have {self.num_channels} channels"
            )
        z = x - self._view(self.shift_in, x)
        z = torch.where(z >= 0, z, self._view(self.slope, x) * z)
        return z + self._view(self.shift_out, x)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


ACTIVATIONS = ("relu", "prelu", "rprelu", "hardtanh", "identity")


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """Returns ``value`` if it is one of ``choices``, else raises a one-line
    ``ValueError`` naming ``what`` and the closest valid choice."""
    choices = list(choices)
    if value in choices:
        return value
    raise ValueError(f"unknown {what} {value!r}" + did_you_mean(value, choices))


def make_activation(name: str, num_channels: int) -> nn.Module:
    """Builds an activation by name.

    ``relu``: ``nn.ReLU``; ``prelu``: ``nn.PReLU(C)`` (one slope per channel,
    He et al. 2015); ``rprelu``: :class:`RPReLU` (ReActNet); ``hardtanh``:
    ``nn.Hardtanh`` (clip to [-1, 1], the BNN-paper activation);
    ``identity``: no activation (Bi-Real Net's original blocks).
    """
    check_choice(name, ACTIVATIONS, "activation")
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(num_channels)
    if name == "rprelu":
        return RPReLU(num_channels)
    if name == "hardtanh":
        return nn.Hardtanh(inplace=True)
    return nn.Identity()


def float_layer_names(model: nn.Module, downsample: bool = True) -> List[str]:
    """Names of the layers that binary recipes keep full precision.

    For a model of this package this is the model's own
    ``float_layer_names(downsample)`` (first conv, classifier and, when
    ``downsample`` is True, the 1x1 convs of the downsample shortcuts). For any
    other model it falls back to the first layer that :func:`bnn.prepare_binary_model`
    swaps by default (``nn.Conv1d``, ``nn.Conv2d``, ``nn.Linear``),
    the last ``nn.Linear`` layer and every conv whose name contains
    ``"downsample"``. The list plugs straight into
    ``prepare_binary_model(..., ignore_layers_name=float_layer_names(model))``.
    """
    own = getattr(model, "float_layer_names", None)
    if callable(own):
        return list(own(downsample=downsample))
    weighted = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) in DEFAULT_MODULES_MAPPING
    ]
    names: List[str] = []
    if weighted:
        names.append(weighted[0][0])
        linears = [n for n, m in weighted if type(m) is nn.Linear]
        if linears and linears[-1] not in names:
            names.append(linears[-1])
    if downsample:
        names += [
            n for n, m in weighted
            if "downsample" in n and type(m) is not nn.Linear and n not in names
        ]
    return names


def init_weights(model: nn.Module, zero_init_last_bn: Optional[Iterable[nn.BatchNorm2d]] = None) -> None:
    """He (fan-out) init for convs, BN weight 1 / bias 0, as torchvision's ResNet."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for bn in zero_init_last_bn or ():
        nn.init.zeros_(bn.weight)
