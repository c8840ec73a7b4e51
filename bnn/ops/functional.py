"""Autograd functions behind the binarizers.

Each saves the least it needs for its backward and makes no needless copy:
the input itself where the layer keeps it alive anyway, a boolean mask (1 byte
per element) where the input is a temporary, the sign mask and the scales of a
weight. ``sign`` maps 0 to +1, as Larq
and Brevitas do, so every binarized value of a real input is exactly +1 or -1;
NaN stays NaN.
"""
from __future__ import annotations

import contextlib
from typing import Optional

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
    "scaled_sign",
    "compact_saved_signs",
]


def sign(x: torch.Tensor) -> torch.Tensor:
    """-1 where ``x < 0``, +1 where ``x >= 0``, NaN where ``x`` is NaN; in ``x``'s dtype (no gradient).

    NaN propagates (as in Larq's ``ste_sign``), so a NaN produced inside a
    network reaches the loss instead of vanishing at the next binary layer.
    Packed inference (:func:`bnn.pack_binary_model`) stores bits, which cannot
    be NaN: there the test is ``x >= t`` alone, and a NaN input gives +1.
    """
    return x.clamp(1.0, 1.0).masked_fill_(x < 0, -1.0)  # clamp keeps NaN; one pass cheaper than where()


class _SignSTE(Function):
    """sign(x); backward: g (plain straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


_OPEN_BOUNDS: dict = {}


def _open_bounds(dtype: torch.dtype):
    """The neighbours of -1 and +1 in ``dtype``: lo < x < hi holds exactly when |x| <= 1."""
    if dtype not in _OPEN_BOUNDS:
        one = torch.tensor(1.0, dtype=dtype)
        _OPEN_BOUNDS[dtype] = (torch.nextafter(-one, -2 * one).item(), torch.nextafter(one, 2 * one).item())
    return _OPEN_BOUNDS[dtype]


class _SignSTEClipped(Function):
    """sign(x); backward: g * 1[|x| <= 1] (Courbariaux et al. 2016).

    Saves the input itself (its producer usually keeps it alive anyway) and
    computes the masked gradient in one fused pass (``hardtanh_backward`` with
    the open interval just wider than [-1, 1]).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = _open_bounds(x.dtype)
        return torch.ops.aten.hardtanh_backward(grad, x, lo, hi)


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
        out = torch.where(torch.rand_like(x) < prob, 1.0, -1.0).to(x.dtype)
        return out.masked_fill_(x.isnan(), float("nan"))  # NaN propagates, as in sign()

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


class _ScaleThreshold(Function):
    """out = s * H(x - s t), H(z) = 1[z > 0] (NNCF activation binarization, Kozlov et al. 2020).

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


class _ScaledSign(Function):
    """Weight binarization in one autograd node (XNOR-Net, DoReFa-Net, Bi-Real's magnitude-aware sign).

    forward, with the mean and the scale taken over ``dims`` (each output channel, or the whole tensor):
      W' = W - mean(W) if ``center`` else W
      y = sign(W') * alpha, alpha = mean(|W'|) (``scale`` "grad" or "detach") or 1 (``scale`` "none")
    backward, straight-through the sign, with g = dL/dy and n the number of entries per scale:
      dL/dW' = g * alpha + sgn(W') * sum(g * sign(W')) / n   (the second term only for "grad";
               sgn is d|w|/dw, 0 at 0, as torch defines it)
      dL/dW = dL/dW' - mean(dL/dW') if ``center`` else dL/dW'
    """

    @staticmethod
    def forward(ctx, w, dims, center: bool, scale: str):
        if center:
            w = w - w.mean(dim=dims, keepdim=True)
        out = _plus_minus_one(w < 0, w.dtype)
        if scale == "none":
            alpha = None
        else:
            n = w.numel() // _numel_kept(w, dims)
            alpha = torch.linalg.vector_norm(w, ord=1, dim=dims, keepdim=True) / n
            out = out.mul_(alpha)
        # the backward needs only sgn(W') in {-1, 0, +1}: one byte per weight instead of a float copy
        ctx.save_for_backward(torch.sgn(w).to(torch.int8) if scale == "grad" else None, alpha)
        ctx.dims, ctx.center, ctx.scale = dims, center, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        sgn, alpha = ctx.saved_tensors
        dims = ctx.dims
        if ctx.scale == "grad":
            n = grad.numel() // _numel_kept(grad, dims)
            sgn = sgn.to(grad.dtype)
            sign = (sgn + 0.5).sign_()  # sign(W') with sign(0) = +1
            grad_alpha = (grad * sign).sum(dim=dims, keepdim=True) / n
            grad_w = torch.addcmul(grad * alpha, sgn, grad_alpha)
        elif ctx.scale == "detach":
            grad_w = grad * alpha
        else:
            grad_w = grad
        if ctx.center:
            grad_w = grad_w - grad_w.mean(dim=dims, keepdim=True)
        return grad_w, None, None, None


def _numel_kept(t: torch.Tensor, dims) -> int:
    """Number of separate scales: the product of the sizes of the dims not reduced."""
    kept = 1
    for d, size in enumerate(t.shape):
        if d not in dims:
            kept *= size
    return kept


def scaled_sign(w: torch.Tensor, dims, center: bool = False, scale: str = "grad") -> torch.Tensor:
    """sign(W - mean W) * mean|W - mean W| over ``dims``; see :class:`_ScaledSign` for the gradients."""
    return _ScaledSign.apply(w, tuple(dims), bool(center), scale)


sign_ste = _SignSTE.apply
sign_ste_clipped = _SignSTEClipped.apply
sign_approx = _SignApprox.apply
sign_swish = _SignSwish.apply
sign_stochastic = _SignStochastic.apply
scale_threshold = _ScaleThreshold.apply
fake_quantize = _FakeQuantize.apply


def _plus_minus_one(negative: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """-1 where ``negative``, else +1: ``1 - 2 * negative``, several times faster on CPU than ``where()`` with scalars."""
    return negative.to(dtype).mul_(-2.0).add_(1.0)


class _SavedAsSigns(torch.autograd.graph.saved_tensors_hooks):
    """Autograd keeps the listed tensors as 1-byte sign masks instead of float copies.

    ``signs``: tensors whose entries are exactly +1 or -1 (binarized
    activations), kept as their sign bits and rebuilt as ``1 - 2 * signbit``.
    ``channel_signs``: tensors whose entries are exactly +c_k or -c_k in each
    output channel k (dim 0: binarized weights, also after a per-channel scale),
    kept as sign bits and c = |t| of one entry per channel, rebuilt as ``where(signbit, -c, c)``.
    Both rebuilds are bit-exact, so gradients are unchanged;
    every other saved tensor is kept as it is.
    """

    def __init__(self, signs=(), channel_signs=()) -> None:
        self.signs = [t for t in signs if t is not None]
        self.channel_signs = [t for t in channel_signs if t is not None]
        super().__init__(self._pack, _unpack_sign)

    def __enter__(self) -> "_SavedAsSigns":
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.signs, self.channel_signs = [], []  # drop the float tensors now (self is in a cycle with _pack)

    def _pack(self, t: torch.Tensor):
        if any(t is s for s in self.signs):
            return (torch.signbit(t), None, t.dtype)
        if any(t is w for w in self.channel_signs):
            first = t.reshape(t.shape[0], -1)[:, :1]  # |t| is the same across a channel: read one entry
            return (torch.signbit(t), first.abs().reshape((-1,) + (1,) * (t.dim() - 1)), t.dtype)
        return t


def _unpack_sign(packed):
    if isinstance(packed, torch.Tensor):
        return packed
    negative, magnitude, dtype = packed
    out = _plus_minus_one(negative, dtype)
    return out if magnitude is None else out.mul_(magnitude)


def compact_saved_signs(activation_binarizer, weight_binarizer, x_in: torch.Tensor,
                        weight: torch.Tensor) -> "contextlib.AbstractContextManager[Optional[_SavedAsSigns]]":
    """The context a binary layer computes its product in: it saves ``x_in`` and ``weight`` as sign masks.

    Only what the binarizers vouch for (``binary_in_training``: the training
    output is exactly +-1 per element, or +-c per output channel for a weight),
    only when autograd records (training with gradients), and never under
    ``torch.compile``. A ``channel_signs`` list on the returned object takes a
    weight derived later (a per-channel scale folded into it). Otherwise a null context.
    """
    exact_in = getattr(activation_binarizer, "binary_in_training", False) and activation_binarizer.enabled
    exact_w = getattr(weight_binarizer, "binary_in_training", False) and weight_binarizer.enabled
    if not (exact_in or exact_w) or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _SavedAsSigns([x_in] if exact_in else [], [weight] if exact_w else [])
