"""Weight binarizers: the ``weight_pre_process`` of a layer.

Each returns sign(W) (sign(0) = +1) times a scale; the latent float weight W
receives the straight-through gradient (identity through the sign), so the
optimizer keeps updating it. Scales are per *output* channel (dim 0 of a conv
or linear weight), which is what XNOR-Net means and what NNCF's code computes.
"""
from __future__ import annotations

import torch

from . import functional as F
from .base import Binarizer

__all__ = [
    "XNORWeightBinarizer",
    "DoReFaWeightBinarizer",
    "MagnitudeAwareWeightBinarizer",
    "GradualWeightBinarizer",
]


def _channel_dims(w: torch.Tensor) -> tuple:
    return tuple(range(1, w.dim()))


class XNORWeightBinarizer(Binarizer):
    """XNOR-Net weight binarization (Rastegari et al. 2016).

    forward: W' = W - mean_c(W) if ``center_weights`` else W;
             y = sign(W') * alpha_c with alpha_c = mean(|W'|) over output channel c
             (``compute_alpha=False``: y = sign(W'))
    backward: straight-through to W' (identity through the sign); alpha_c
             receives its true gradient, and the centering is differentiated.
    """

    weight_bits = 1
    binary_in_training = True
    detach_scale = False

    def __init__(self, compute_alpha: bool = True, center_weights: bool = False) -> None:
        super().__init__()
        self.compute_alpha = bool(compute_alpha)
        self.center_weights = bool(center_weights)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        scale = "none" if not self.compute_alpha else ("detach" if self.detach_scale else "grad")
        return F.scaled_sign(w, _channel_dims(w), self.center_weights, scale)

    def extra_repr(self) -> str:
        return f"compute_alpha={self.compute_alpha}, center_weights={self.center_weights}" + (
            "" if self.enabled else ", enabled=False"
        )


class MagnitudeAwareWeightBinarizer(XNORWeightBinarizer):
    """Bi-Real Net's magnitude-aware sign (Liu et al. 2018): XNOR scaling with the scale detached.

    forward: y = sign(W) * stop_gradient(mean_c |W|)
    backward: dL/dW = dL/dy * alpha_c (straight-through, scaled; no gradient through alpha)
    """

    detach_scale = True


class DoReFaWeightBinarizer(Binarizer):
    """DoReFa-Net 1-bit weights (Zhou et al. 2016): one scale for the whole tensor.

    forward: y = sign(W) * mean(|W|)
    backward: straight-through to W; the scale receives its true gradient.
    """

    weight_bits = 1
    binary_in_training = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        return F.scaled_sign(w, tuple(range(w.dim())))


class GradualWeightBinarizer(Binarizer):
    """Gradual binarization: interpolate float and binary weights.

    forward: y = (1 - r) W + r M, where M takes the binarized value B at each
    entry with probability p and W elsewhere (a fresh draw every training
    forward; in eval the expectation p B + (1 - p) W). B = sign(W) * alpha_c,
    with alpha_c = mean_c |W| detached (``compute_alpha=True``) or 1 (the gradual-binarization recipe's
    plain +-1 weights). r = ``bin_ratio`` and p are plain floats a schedule
    ramps from 0 to 1; they are saved in the state dict.
    backward: straight-through (identity through the sign).
    """

    weight_bits = 1

    def __init__(self, bin_ratio: float = 0.0, p: float = 0.0, compute_alpha: bool = True) -> None:
        super().__init__()
        self.bin_ratio = float(bin_ratio)
        self.p = float(p)
        self.compute_alpha = bool(compute_alpha)

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "bin_ratio": self.bin_ratio, "p": self.p}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.bin_ratio = float(state.get("bin_ratio", self.bin_ratio))
        self.p = float(state.get("p", self.p))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.bin_ratio == 0.0 or self.p == 0.0:
            return w
        binary = F.sign_ste(w)
        if self.compute_alpha:
            binary = binary * w.detach().abs().mean(dim=_channel_dims(w), keepdim=True)
        if self.p >= 1.0:
            mixed = binary
        elif self.training:
            mixed = torch.where(torch.rand_like(w) < self.p, binary, w)
        else:
            mixed = torch.lerp(w, binary, self.p)
        return mixed if self.bin_ratio == 1.0 else torch.lerp(w, mixed, self.bin_ratio)

    def extra_repr(self) -> str:
        return f"bin_ratio={self.bin_ratio}, p={self.p}, compute_alpha={self.compute_alpha}" + (
            "" if self.enabled else ", enabled=False"
        )
