"""Bit packing and the packed binary convolution, native and pure torch.

Bits: +1 -> 0, -1 -> 1 (sign(0) = +1). For a, w in {-1, +1}^K,
dot(a, w) = K - 2 * popcount(a XOR w) (REFERENCE.md section 5; XNOR-Net,
Rastegari et al. 2016). Zero padding of the fake-binarized conv contributes 0:
the native kernel leaves padded taps out of K, the torch path pads the +-1
input with 0 exactly like ``torch.nn.functional.conv2d``.

Weight words (format version 1): int64 tensor ``[G, CB, T, Wg, NR]`` with G the
groups, NR = 32 output channels per panel, CB = ceil(out_channels / G / NR)
panels, T = prod(kernel_size) taps and Wg = ceil(in_channels / G / 64) words of
64 input channels per tap (unused bits are 0). A layer whose channels are
multiples of 64 (inputs) and 32 (outputs) per group takes exactly 1 bit per weight.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import kernel as _kernel

__all__ = ["NR", "pack_weight_bits", "unpack_weight_signs", "binary_conv", "sign_input"]

NR = 32  # output channels per weight panel


def _shifts(device) -> torch.Tensor:
    return torch.arange(64, dtype=torch.int64, device=device)


def _bit_masks(device) -> torch.Tensor:
    """``1 << k`` for k = 0..63 as int64 (bit 63 is -2**63): bit tests by ``&``, which ONNX exports (BitwiseAnd)."""
    return torch.tensor([1 << k for k in range(63)] + [-(1 << 63)], dtype=torch.int64, device=device)


def pack_weight_bits(negative: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Pack a boolean ``[out, in/groups, *kernel]`` tensor (True = -1) into weight words ``[G, CB, T, Wg, NR]``."""
    cout, cg = negative.shape[:2]
    taps = int(math.prod(negative.shape[2:]))
    coutg = cout // groups
    wg, cb = max(1, -(-cg // 64)), -(-coutg // NR)
    b = negative.reshape(cout, cg, taps).permute(0, 2, 1).to(torch.uint8)  # [cout, T, cg]
    b = F.pad(b, (0, wg * 64 - cg)).reshape(cout, taps, wg, 8, 8)
    byte_weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=b.device)
    octets = (b * byte_weights).sum(-1, dtype=torch.uint8)  # [cout, T, wg, 8]: byte k holds bits 8k..8k+7
    shifts = torch.arange(0, 64, 8, dtype=torch.int64, device=b.device)
    words = (octets.to(torch.int64) << shifts).sum(-1)  # distinct bits: the sum is the bitwise or
    words = words.reshape(groups, coutg, taps, wg)
    words = F.pad(words, (0, 0, 0, 0, 0, cb * NR - coutg))
    return words.reshape(groups, cb, NR, taps, wg).permute(0, 1, 3, 4, 2).contiguous()


def unpack_weight_signs(words: torch.Tensor, out_channels: int, in_channels_per_group: int,
                        kernel_size: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_weight_bits`: the +-1 weight ``[out, in/groups, *kernel]`` in ``dtype``."""
    groups, cb, taps, wg, nr = words.shape
    coutg = out_channels // groups
    w = words.permute(0, 1, 4, 2, 3).reshape(groups, cb * nr, taps, wg)[:, :coutg].reshape(out_channels, taps, wg)
    bits = (w.unsqueeze(-1) & _bit_masks(w.device)) != 0
    bits = bits.reshape(out_channels, taps, wg * 64)[..., :in_channels_per_group]
    signs = torch.where(bits, -1.0, 1.0).to(dtype)
    return signs.permute(0, 2, 1).reshape(out_channels, in_channels_per_group, *kernel_size)


def sign_input(x: torch.Tensor, threshold: Optional[torch.Tensor], channel_dim: int) -> torch.Tensor:
    """+-1 input: -1 where ``x < threshold_c`` (threshold = -bias of RSign, 0 for plain sign), +1 elsewhere."""
    if threshold is None:
        neg = x < 0
    else:
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        neg = x < threshold.to(x.dtype).view(shape)
    return torch.where(neg, -1.0, 1.0).to(x.dtype)


def _conv(x, w, stride, padding, dilation, groups):
    nd = w.dim() - 2  # the weight, not the input, tells a linear layer ([*, C] input of any rank) from a conv
    if nd == 0:
        return F.linear(x, w)
    fn = F.conv1d if nd == 1 else F.conv2d
    return fn(x, w, None, stride, padding, dilation, groups)


def _epilogue(y: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor], channel_dim: int) -> torch.Tensor:
    shape = [1] * y.dim()
    shape[channel_dim] = -1
    y = y * mul.to(y.dtype).view(shape)
    if add is not None:
        y = y + add.to(y.dtype).view(shape)
    return y


def _native_ok(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and _kernel.native() is not None
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def binary_conv(x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
                threshold: Optional[torch.Tensor], out_channels: int, kernel_size: Tuple[int, ...],
                stride: Tuple[int, ...] = (), padding: Tuple[int, ...] = (), dilation: Tuple[int, ...] = (),
                groups: int = 1, in_channels: Optional[int] = None, use_native: Optional[bool] = None) -> torch.Tensor:
    """``mul_c * dot(sign(x), W_packed) + add_c`` for a packed conv (``kernel_size`` of length 1 or 2) or linear (``()``).

    ``x`` is ``[N, C, *spatial]`` (conv) or ``[*, C]`` (linear); padding is
    symmetric zero padding of the binarized input. ``use_native=None`` takes the
    C kernel when it is built and ``x`` is float32 on the CPU, else the pure-torch
    path (any device, any float dtype); both give bit-identical results.
    """
    nd = len(kernel_size)
    cdim = 1 if nd else x.dim() - 1
    cin = x.shape[cdim] if in_channels is None else in_channels
    cg = cin // groups
    native = _native_ok(x) if use_native is None else use_native
    if not native:
        xb = sign_input(x, threshold, cdim)
        w = unpack_weight_signs(words, out_channels, cg, kernel_size, dtype=x.dtype)
        y = _conv(xb, w, stride, padding, dilation, groups)
        return _epilogue(y, mul, add, cdim)

    mod = _kernel.native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it); use_native=False")
    wg = words.shape[3]
    if words.dtype != torch.int64 or not words.is_contiguous():
        words = words.to(torch.int64).contiguous()
    if mul.dtype != torch.float32 or not mul.is_contiguous():
        mul = mul.to(torch.float32).contiguous()
    if add is not None and (add.dtype != torch.float32 or not add.is_contiguous()):
        add = add.to(torch.float32).contiguous()
    if threshold is not None and (threshold.dtype != torch.float32 or not threshold.is_contiguous()):
        threshold = threshold.to(torch.float32).contiguous()
    if nd == 0:  # linear: the rows are the pixels of a 1 x rows image
        lead = x.shape[:-1]
        xc = x.reshape(-1, cin)
        if xc.shape[0] == 0:
            return x.new_empty(*lead, out_channels)
        if not xc.is_contiguous():
            xc = xc.contiguous()
        plan = native_plan(xc.shape, wg, out_channels, kernel_size, stride, padding, dilation, groups, cin)
        return run_native(plan, xc, words, mul, add, threshold).reshape(*lead, out_channels)
    plan = native_plan(x.shape, wg, out_channels, kernel_size, stride, padding, dilation, groups, cin)
    return run_native(plan, x, words, mul, add, threshold)


def native_plan(shape, wg: int, out_channels: int, kernel_size, stride, padding, dilation, groups: int, cin: int):
    """Integer arguments of the native kernel for an input of ``shape`` (cached per input shape by the layers)."""
    nd = len(kernel_size)
    cg = cin // groups
    if nd == 0:
        n, h, w_ = 1, 1, shape[0]
        kh, kw, sh, sw, ph, pw, dh, dw = 1, 1, 1, 1, 0, 0, 1, 1
    elif nd == 1:
        n, h, w_ = shape[0], 1, shape[2]
        kh, kw, sh, sw, ph, pw, dh, dw = 1, kernel_size[0], 1, stride[0], 0, padding[0], 1, dilation[0]
    else:
        n, h, w_ = shape[0], shape[2], shape[3]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"bnn.deploy: input {tuple(shape)} is smaller than the kernel {tuple(kernel_size)}")
    uh = uw = 1
    hs, ws = h, w_
    if kh == 1 and kw == 1 and ph == 0 and pw == 0 and (sh > 1 or sw > 1):
        # 1x1 strided conv: pack only the pixels it reads, then run it with stride 1
        uh, uw, hs, ws, sh, sw = sh, sw, oh, ow, 1, 1
    scratch = n * (hs + 2 * ph) * (ws + 2 * pw) * groups * wg
    ints = (n, h, w_, uh, uw, hs, ws, groups, cg, wg, out_channels // groups, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
    return nd, n, oh, ow, out_channels, scratch, ints


def run_native(plan, x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
               threshold: Optional[torch.Tensor]) -> torch.Tensor:
    """Run the native kernel with a :func:`native_plan` (float32 CPU ``x``; int64/float32 contiguous buffers)."""
    nd, n, oh, ow, cout, scratch, ints = plan
    if nd == 2:
        if not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty((n, cout, oh, ow), dtype=torch.float32, memory_format=torch.channels_last)
    elif nd == 1:
        x = x.transpose(1, 2).contiguous()  # [N, L, C]
        out = torch.empty((n, ow, cout), dtype=torch.float32)
    else:
        out = torch.empty((ow, cout), dtype=torch.float32)
    a = torch.empty(scratch, dtype=torch.int64)
    _kernel.native().bconv(x.data_ptr(), 0 if threshold is None else threshold.data_ptr(), a.data_ptr(),
                           words.data_ptr(), mul.data_ptr(), 0 if add is None else add.data_ptr(), out.data_ptr(),
                           *ints, _kernel.get_isa(), torch.get_num_threads())
    return out.transpose(1, 2) if nd == 1 else out
