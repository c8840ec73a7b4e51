"""Autograd functions behind the binarizers.

Each saves the least it needs for its backward: a boolean mask (1 byte per
element) where the surrogate gradient is a clipped identity, the input itself
only where the surrogate depends on its value. ``sign`` maps 0 to +1, as Larq
and Brevitas do, so every binarized value is exactly +1 or -1.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

__all__ = [
    "sign",
    "sign_ste",
    "sign_ste_clipped",
    "sign_approx",
    "sign_swish",
    "sign_stochastic",
    "scale_threshold",
    "fake_quantize",
]


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0``, -1 elsewhere, in ``x``'s dtype (no gradient)."""
    return torch.where(x < 0, -1.0, 1.0).to(x.dtype)


class _SignSTE(Function):
    """sign(x); backward: g (plain straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignSTEClipped(Function):
    """sign(x); backward: g * 1[|x| <= 1] (Courbariaux et al. 2016)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.le(x.abs(), 1.0))
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


class _SignApprox(Function):
    """sign(x); backward: g * (2 - 2|x|) * 1[|x| <= 1] (Bi-Real Net, Liu et al. 2018)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_min_(0.0)


class _SignSwish(Function):
    """sign(x); backward: g * b(2 - b x tanh(b x / 2)) / (1 + cosh(b x)) (BNN+, Darabi et al. 2018)."""

    @staticmethod
    def forward(ctx, x, beta: float):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        bx = ctx.beta * x
        surrogate = ctx.beta * (2.0 - bx * torch.tanh(bx / 2.0)) / (1.0 + torch.cosh(bx))
        return grad * surrogate, None


class _SignStochastic(Function):
    """+1 with probability hardsigmoid(x) = clip((x + 1) / 2, 0, 1), else -1; backward g * 1[|x| <= 1]."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.le(x.abs(), 1.0))
        prob = ((x + 1.0) * 0.5).clamp_(0.0, 1.0)
        return torch.where(torch.rand_like(x) < prob, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


class _ScaleThreshold(Function):
    """out = s * H(x - s t), H(z) = 1[z > 0] (NNCF activation binarization, seed 000).

    Backward, with g = dL/dout:
      dL/dx = g * 1[0 <= x <= s]
      dL/ds = sum g * (1[x <= s] * (out - x) / s + 1[x > s])
      dL/dt = sum over all dims but the channel of -g * 1[0 < x < s]
    """

    @staticmethod
    def forward(ctx, x, s, t):
        out = (x > s * t).to(x.dtype) * s
        ctx.save_for_backward(x, s, out)
        ctx.t_shape = t.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        x, s, out = ctx.saved_tensors
        below = x <= s
        grad_x = grad * ((x >= 0) & below)
        grad_s = (grad * torch.where(below, (out - x) / s, 1.0)).sum().reshape(s.shape)
        grad_t = -(grad * ((x > 0) & (x < s)))
        dims = [d for d, size in enumerate(ctx.t_shape) if size == 1 and grad_t.shape[d] != 1]
        grad_t = grad_t.sum(dim=dims, keepdim=True) if dims else grad_t
        return grad_x, grad_s, grad_t.reshape(ctx.t_shape)


class _FakeQuantize(Function):
    """round(clip(x / scale, qmin, qmax)) * scale; backward g * 1[qmin <= x / scale <= qmax] (STE)."""

    @staticmethod
    def forward(ctx, x, scale, qmin: int, qmax: int):
        scaled = x / scale
        ctx.save_for_backward((scaled >= qmin) & (scaled <= qmax))
        return scaled.round_().clamp_(qmin, qmax).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


sign_ste = _SignSTE.apply
sign_ste_clipped = _SignSTEClipped.apply
sign_approx = _SignApprox.apply
sign_swish = _SignSwish.apply
sign_stochastic = _SignStochastic.apply
scale_threshold = _ScaleThreshold.apply
fake_quantize = _FakeQuantize.apply
