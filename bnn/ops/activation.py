"""Activation binarizers and quantizers: the ``activation_pre_process`` of a layer.

All emit exactly +1 or -1 (sign(0) = +1) except :class:`ScaleThresholdBinarizer`
(0 or s) and :class:`KBitActivationQuantizer` (a k-bit grid).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import functional as F
from .base import Binarizer, channel_shape, in_channels

__all__ = [
    "SignBinarizer",
    "BasicInputBinarizer",
    "ApproxSignBinarizer",
    "SwishSignBinarizer",
    "InputBiasBinarizer",
    "LearnedThresholdBinarizer",
    "StochasticInputBinarizer",
    "ScaleThresholdBinarizer",
    "KBitActivationQuantizer",
]


class SignBinarizer(Binarizer):
    """Base of the binarizers whose eval output is sign(x) in {-1, +1} (threshold 0).

    Subclasses differ in their training-time forward or backward only; the
    packer runs them with the xnor-popcount kernel.
    """

    def sign_threshold(self) -> Optional[torch.Tensor]:
        return torch.zeros(()) if self.enabled else None


class BasicInputBinarizer(SignBinarizer):
    """sign with the clipped straight-through estimator (BNN, Courbariaux et al. 2016).

    forward: y = sign(x) in {-1, +1}, sign(0) = +1
    backward: dL/dx = dL/dy * 1[|x| <= 1]
    """

    binary_in_training = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.sign_ste_clipped(x) if self.enabled else x


class ApproxSignBinarizer(SignBinarizer):
    """sign with Bi-Real Net's piecewise-polynomial surrogate (Liu et al. 2018).

    forward: y = sign(x)
    backward: dL/dx = dL/dy * (2 - 2|x|) * 1[|x| <= 1]
    """

    binary_in_training = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.sign_approx(x) if self.enabled else x


class SwishSignBinarizer(SignBinarizer):
    """sign with the SignSwish surrogate of BNN+ (Darabi et al. 2018).

    forward: y = sign(x)
    backward: dL/dx = dL/dy * b (2 - b x tanh(b x / 2)) / (1 + cosh(b x)), b = ``beta`` (5 by default)

    Unlike the reference toolkit's tanh-based binarizer, the sign is not taken
    under ``no_grad``: the surrogate gradient really flows.
    """

    binary_in_training = True

    def __init__(self, beta: float = 5.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.sign_swish(x, self.beta) if self.enabled else x

    def extra_repr(self) -> str:
        return f"beta={self.beta}" + ("" if self.enabled else ", enabled=False")


class InputBiasBinarizer(Binarizer):
    """RSign of ReActNet (Liu et al. 2020): sign of the input shifted by a learnable per-channel bias.

    forward: y = sign(x + b_c), b initialised to 0, one per input channel
    backward (ApproxSign surrogate, z = x + b): dL/dz = dL/dy * (2 - 2|z|) * 1[|z| <= 1],
    dL/dx = dL/dz and dL/db_c = sum of dL/dz over everything but the channel.

    Works for Conv1d, Conv2d (channels are dim 1) and Linear (the last dim).
    """

    binary_in_training = True

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel_shape(module, in_channels(module))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.sign_approx(x + self.bias) if self.enabled else x

    def sign_threshold(self) -> Optional[torch.Tensor]:
        return (-self.bias.detach()).reshape(-1) if self.enabled else None


class LearnedThresholdBinarizer(InputBiasBinarizer):
    """RSign whose threshold starts at the data: the input binarizer for ReLU networks.

    forward: y = sign(x - t_c) with t_c = -b_c learnable, one per input channel
    (:class:`InputBiasBinarizer`'s math and ApproxSign surrogate, z = x + b):
    dL/dz = dL/dy * (2 - 2|z|) * 1[|z| <= 1], dL/dx = dL/dz, dL/db_c = sum of dL/dz over all but c.

    Initialisation: on the first forward with the binarizer enabled, t_c is set
    to the mean of channel c of that batch (averaged over processes when
    ``torch.distributed`` is initialised), so the sign splits each channel
    instead of emitting a constant: behind a ReLU, where every input is
    >= 0, plain sign(x) is always +1 and the layer carries no information.
    For a ReLU of a standardised input, P(x > mean) is about 0.35. A buffer
    records that the initialisation happened, so a loaded checkpoint keeps its
    learned threshold. The learnable shift is ReActNet's RSign (Liu et al. 2020);
    the data-derived start plays the role of NNCF's data-set-initialised
    activation scale (Kozlov et al. 2020).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        self.register_buffer("threshold_initialized", torch.tensor(False))
        self._threshold_known = False  # the buffer was read once: no device sync per forward after that

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._threshold_known = False  # read the loaded flag on the next forward

    @torch.no_grad()
    def _init_threshold(self, x: torch.Tensor) -> None:
        channel = 1 if len(self.bias.shape) > 1 else x.dim() - 1
        dims = [d for d in range(x.dim()) if d != channel]
        mean = x.detach().to(self.bias.dtype).mean(dim=dims)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean)
            mean /= torch.distributed.get_world_size()
        self.bias.copy_(-mean.reshape(self.bias.shape))
        self.threshold_initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled and not self._threshold_known:
            if not bool(self.threshold_initialized):
                self._init_threshold(x)
            self._threshold_known = True
        return super().forward(x)


class StochasticInputBinarizer(SignBinarizer):
    """Stochastic binarization (Courbariaux et al. 2016).

    training: y = +1 with probability clip((x + 1) / 2, 0, 1), else -1
    eval: y = sign(x) (deterministic)
    backward: dL/dx = dL/dy * 1[|x| <= 1]; the input is never modified.
    """

    binary_in_training = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return F.sign_stochastic(x) if self.training else F.sign_ste_clipped(x)


class ScaleThresholdBinarizer(Binarizer):
    """The activation binarizer of NNCF (Kozlov et al. 2020): out = s * H(x - s t).

    s = exp(scale_param) is one scalar per layer, t = sigmoid(threshold_param)
    one value per input channel (threshold_param starts at 0, so t = 0.5).
    ``scale_param`` is set once, on the first training forward with the
    binarizer enabled, to log of the 99.9th-percentile input value.

    Gradients (g = dL/dout), chained through exp and sigmoid by autograd:
      dL/dx = g * 1[0 <= x <= s]
      dL/ds = sum g * (1[x <= s] * (out - x) / s + 1[x > s])
      dL/dt = sum over all dims but the channel of -g * 1[0 < x < s]
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.scale_param = nn.Parameter(torch.zeros(()))
        self.threshold_param = nn.Parameter(torch.zeros(channel_shape(module, in_channels(module))))
        self.register_buffer("scale_initialized", torch.tensor(False))

    @torch.no_grad()
    def _init_scale(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1)
        k = max(1, round(flat.numel() * 0.001))
        top = torch.topk(flat, k, largest=True, sorted=True).values[-1]
        self.scale_param.copy_(top.clamp_min(torch.finfo(top.dtype).tiny).log())
        self.scale_initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.training and not bool(self.scale_initialized):
            self._init_scale(x)
        return F.scale_threshold(x, self.scale_param.exp(), torch.sigmoid(self.threshold_param))


class KBitActivationQuantizer(Binarizer):
    """Symmetric k-bit fake quantization of a layer's input (int8 by default; the target of gradual binarization).

    q(x) = clip(round(x / d), -2^(k-1), 2^(k-1) - 1) * d, with d = m / (2^(k-1) - 1)
    and m a running maximum of |x| (exponential moving average, ``momentum``),
    updated in training and frozen in eval. Backward: straight-through inside the
    grid's range, 0 outside.

    ``ratio`` (0..1, settable during training) blends float and quantized:
    y = (1 - ratio) * x + ratio * q(x), for gradual quantization.
    """

    def __init__(self, bits: int = 8, ratio: float = 1.0, momentum: float = 0.1) -> None:
        super().__init__()
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"KBitActivationQuantizer: bits must be in 2..16, got {bits}")
        self.bits = int(bits)
        self.ratio = float(ratio)
        self.momentum = float(momentum)
        self.register_buffer("running_absmax", torch.tensor(0.0))

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "ratio": self.ratio}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.ratio = float(state.get("ratio", self.ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.ratio == 0.0:
            return x
        qmax = 2 ** (self.bits - 1) - 1
        if self.training:
            with torch.no_grad():  # the first batch sets the running maximum, later ones move it
                current = x.detach().abs().max().to(self.running_absmax.dtype)
                first = self.running_absmax == 0
                self.running_absmax.copy_(torch.where(first, current, self.running_absmax.lerp(current, self.momentum)))
        step = (self.running_absmax / qmax).clamp_min(torch.finfo(x.dtype).tiny).to(x.dtype)
        q = F.fake_quantize(x, step, -qmax - 1, qmax)
        return q if self.ratio == 1.0 else torch.lerp(x, q, self.ratio)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, ratio={self.ratio}" + ("" if self.enabled else ", enabled=False")
