"""Bit packing and the packed binary convolution, native and pure torch.

Bits: +1 -> 0, -1 -> 1 (sign(0) = +1). For a, w in {-1, +1}^K,
dot(a, w) = K - 2 * popcount(a XOR w) (XNOR-Net,
Rastegari et al. 2016). Zero padding of the fake-binarized conv contributes 0:
the native kernel leaves padded taps out of K, the torch path pads the +-1
input with 0 exactly like ``torch.nn.functional.conv2d``.

Weight words (format version 1): int64 tensor ``[G, CB, T, Wg, NR]`` with G the
groups, NR = 32 output channels per panel, CB = ceil(out_channels / G / NR)
panels, T = prod(kernel_size) taps and Wg = ceil(in_channels / G / 64) words of
64 input channels per tap (unused bits are 0). A layer whose channels are
multiples of 64 (inputs) and 32 (outputs) per group takes exactly 1 bit per weight.

The packed conv is also the custom op ``torch.ops.bnn.binary_conv``
(``torch.library.custom_op`` with a fake implementation), so ``torch.compile``
and ``torch.export`` see one opaque node per packed layer.
"""
from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import kernel as _kernel

__all__ = ["NR", "pack_weight_bits", "unpack_weight_signs", "sign_input", "output_size", "binary_conv",
           "binary_conv_torch", "binary_conv_op", "sign_words", "unsign_words", "NativePlan", "native_plan",
           "native_supports", "native_applies", "layer_constants", "tensor_state"]

NR = 32  # output channels per weight panel


def _shifts(device) -> torch.Tensor:
    return torch.arange(64, dtype=torch.int64, device=device)


def _bit_masks(device) -> torch.Tensor:
    """``1 << k`` for k = 0..63 as int64 (bit 63 is -2**63): bit tests by ``&``, which ONNX exports (BitwiseAnd)."""
    return torch.tensor([1 << k for k in range(63)] + [-(1 << 63)], dtype=torch.int64, device=device)


def _pack_bits_last(bits: torch.Tensor) -> torch.Tensor:
    """Boolean ``[..., K]`` -> int64 words ``[..., max(1, ceil(K / 64))]``: bit k % 64 of word k // 64 is
    ``bits[..., k]`` (the unused high bits of the last word are 0). The sum of the distinct bit values (bit 63 is
    -2**63) is their bitwise or, and never overflows; sums and products, not shifts, so that ONNX exports it."""
    k = bits.shape[-1]
    nw = max(1, -(-k // 64))
    b = F.pad(bits.to(torch.int64), (0, nw * 64 - k)).reshape(*bits.shape[:-1], nw, 64)
    return (b * _bit_masks(b.device)).sum(-1)


def _unpack_bits_last(words: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`_pack_bits_last`: int64 ``[..., W]`` -> boolean ``[..., k]``."""
    bits = (words.unsqueeze(-1) & _bit_masks(words.device)) != 0
    return bits.reshape(*words.shape[:-1], words.shape[-1] * 64)[..., :k]


def pack_weight_bits(negative: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Pack a boolean ``[out, in/groups, *kernel]`` tensor (True = -1) into weight words ``[G, CB, T, Wg, NR]``."""
    cout, cg = negative.shape[:2]
    taps = int(math.prod(negative.shape[2:]))
    coutg = cout // groups
    wg, cb = max(1, -(-cg // 64)), -(-coutg // NR)
    words = _pack_bits_last(negative.reshape(cout, cg, taps).permute(0, 2, 1))  # [cout, T, wg]
    words = words.reshape(groups, coutg, taps, wg)
    words = F.pad(words, (0, 0, 0, 0, 0, cb * NR - coutg))
    return words.reshape(groups, cb, NR, taps, wg).permute(0, 1, 3, 4, 2).contiguous()


def unpack_weight_signs(words: torch.Tensor, out_channels: int, in_channels_per_group: int,
                        kernel_size: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_weight_bits`: the +-1 weight ``[out, in/groups, *kernel]`` in ``dtype``."""
    groups, cb, taps, wg, nr = words.shape
    coutg = out_channels // groups
    w = words.permute(0, 1, 4, 2, 3).reshape(groups, cb * nr, taps, wg)[:, :coutg].reshape(out_channels, taps, wg)
    signs = torch.where(_unpack_bits_last(w, in_channels_per_group), -1.0, 1.0).to(dtype)
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


def sign_words(y: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The sign words of a 2-d conv output ``y [N, C, H, W]``: int64 ``[N, H, W, ceil(C / 64)]``, bit c % 64 of
    word c // 64 set where ``y_c < threshold_c`` (the next packed conv's -1 inputs; sign-bit chaining)."""
    return _pack_bits_last((y < threshold.to(y.dtype).view(1, -1, 1, 1)).permute(0, 2, 3, 1))


def unsign_words(words: torch.Tensor, channels: int, dtype=torch.float32) -> torch.Tensor:
    """Inverse of :func:`sign_words`: the +-1 input ``[N, channels, H, W]`` (channels last) the words stand for."""
    signs = torch.where(_unpack_bits_last(words, channels), -1.0, 1.0).to(dtype)
    return signs.permute(0, 3, 1, 2)


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


def output_size(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int]) -> Tuple[int, ...]:
    """Spatial output size of a conv: ``(size + 2 pad - dil (k - 1) - 1) // stride + 1`` per dimension."""
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel_size, stride, padding, dilation))


def binary_conv_torch(x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
                      threshold: Optional[torch.Tensor], out_channels: int, kernel_size: Sequence[int],
                      stride: Sequence[int] = (), padding: Sequence[int] = (), dilation: Sequence[int] = (),
                      groups: int = 1) -> torch.Tensor:
    """The pure-torch packed conv / linear: ``mul_c * conv(sign(x), unpack(words)) + add_c`` (any device and dtype)."""
    cdim = 1 if len(kernel_size) else x.dim() - 1
    xb = sign_input(x, threshold, cdim)
    w = unpack_weight_signs(words, out_channels, x.shape[cdim] // groups, kernel_size, dtype=x.dtype)
    y = _conv(xb, w, stride, padding, dilation, groups)
    return _epilogue(y, mul, add, cdim)


@dataclass(frozen=True)
class NativePlan:
    """The native kernel's arguments for one packed layer and one input shape.

    Computed once per (layer geometry, input shape) by :func:`native_plan` and
    reused on every call, by the layers' eager fast path and by the
    ``bnn::binary_conv`` custom op alike. ``ints`` are the kernel's integer
    arguments (see ``bnn/deploy/csrc/bnn_kernel.c``), ``geometry`` the same
    checked and packed by the kernel (``bconv_geometry``) for its calls.
    """

    dims: int  # spatial dimensions: 2 (conv2d), 1 (conv1d), 0 (linear)
    out_shape: Tuple[int, ...]  # the logical output shape ([N, C, OH, OW], [N, C, L] or [*, C])
    buffer_shape: Tuple[int, ...]  # the kernel's output, channels last: [N, C, OH, OW] (as channels_last), [N, L, C] or [rows, C]
    buffer_stride: Tuple[int, ...]  # its strides (channels last for 2 spatial dimensions, else contiguous)
    scratch_words: int  # int64 words of the kernel's packed input (its size comes from the kernel: bconv_scratch)
    ints: Tuple[int, ...]
    geometry: bytes = b""
    spare_scratch: List[torch.Tensor] = field(default_factory=list, compare=False, repr=False)
    spare_out: List[torch.Tensor] = field(default_factory=list, compare=False, repr=False)

    def run(self, x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
            threshold: Optional[torch.Tensor], consts: Optional[torch.Tensor] = None,
            out_threshold: Optional[torch.Tensor] = None, shortcut: Optional[torch.Tensor] = None,
            shortcut_gain: Optional[torch.Tensor] = None, isa: Optional[int] = None) -> torch.Tensor:
        """Run the kernel on float32 CPU ``x`` of the planned shape (contiguous int64 / float32 CPU buffers).

        ``consts``: the layer constants of ``words`` at this geometry for code path ``isa`` (default: the one in
        use; :func:`bnn.deploy.kernel.conv_constants` with :attr:`ints`), or None to have the kernel compute them
        in the call. The output is always a
        fresh tensor: a result the caller still holds (or a view of it) is never overwritten by a later call.
        Sign-bit chaining (2-d convs): an int64 ``x`` is the input's sign words (:func:`sign_words`, contiguous
        ``[N, H, W, ceil(C / 64)]``; ``threshold`` is then not used), and with ``out_threshold`` the result is the
        output's sign words instead of the float output (which stays in a reused scratch). With ``shortcut``
        (2-d: a float32 tensor of the output's shape, e.g. ``x`` itself) the kernel adds ``shortcut *
        shortcut_gain_c`` (``shortcut`` when the gain is None) to its output: Bi-Real Net's real shortcut, two
        roundings like ``y + s * gain`` in torch.
        """
        xp = xw = res = 0
        if shortcut is not None:
            shortcut = shortcut.contiguous(memory_format=torch.channels_last)  # x itself when it is already
            res = shortcut.data_ptr()
        if x.dtype == torch.int64:
            x = x.contiguous()  # the sign words, held until the kernel returns
            xw = x.data_ptr()
        else:
            if self.dims == 2:
                x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = x.transpose(1, 2).contiguous() if self.dims == 1 else x.contiguous()
            xp = x.data_ptr()
        # the scratches (never handed out) are reused; taken out of their pool while in use, so a concurrent call on
        # another Python thread allocates its own
        spare = self.spare_scratch
        try:
            scratch = spare.pop()
        except IndexError:
            scratch = torch.empty(self.scratch_words, dtype=torch.int64)
        ow = othr = 0
        if out_threshold is None:
            out = torch.empty_strided(self.buffer_shape, self.buffer_stride, dtype=torch.float32)
        else:
            try:
                out = self.spare_out.pop()
            except IndexError:
                out = torch.empty_strided(self.buffer_shape, self.buffer_stride, dtype=torch.float32)
            n, c, oh, ow_ = self.buffer_shape
            # the kernel may write 32-bit halves of each word (a 32-channel panel each): zero the never-written ones
            signs = (torch.empty if c % 64 == 0 else torch.zeros)((n, oh, ow_, -(-c // 64)), dtype=torch.int64)
            ow, othr = signs.data_ptr(), out_threshold.data_ptr()
        _kernel.native().bconv(self.geometry, xp, 0 if threshold is None else threshold.data_ptr(),
                               scratch.data_ptr(), self.scratch_words, words.data_ptr(), mul.data_ptr(),
                               0 if add is None else add.data_ptr(), out.data_ptr(),
                               0 if consts is None else consts.data_ptr(), xw, ow, othr, res,
                               0 if shortcut_gain is None else shortcut_gain.data_ptr(),
                               _kernel.get_isa() if isa is None else isa,
                               torch.get_num_threads())
        spare.append(scratch)
        if out_threshold is not None:
            self.spare_out.append(out)
            return signs
        if self.dims == 1:
            return out.transpose(1, 2)
        return out if self.dims == 2 else out.view(self.out_shape)


@functools.lru_cache(maxsize=1024)
def native_plan(shape: Tuple[int, ...], words_per_tap: int, out_channels: int, kernel_size: Tuple[int, ...],
                stride: Tuple[int, ...], padding: Tuple[int, ...], dilation: Tuple[int, ...], groups: int) -> NativePlan:
    """The :class:`NativePlan` of a packed layer for an input of ``shape`` (checked by the caller; cached)."""
    nd = len(kernel_size)
    cin = shape[1] if nd else shape[-1]
    cg = cin // groups
    if nd == 0:  # linear: the rows are the pixels of a 1 x rows image
        rows = int(math.prod(shape[:-1]))
        n, h, w_, oh, ow = 1, 1, rows, 1, rows
        kh, kw, sh, sw, ph, pw, dh, dw = 1, 1, 1, 1, 0, 0, 1, 1
        out_shape, buffer_shape = tuple(shape[:-1]) + (out_channels,), (rows, out_channels)
    elif nd == 1:
        n, h, w_ = shape[0], 1, shape[2]
        kh, kw, sh, sw, ph, pw, dh, dw = 1, kernel_size[0], 1, stride[0], 0, padding[0], 1, dilation[0]
        oh, ow = 1, output_size(shape[2:], kernel_size, stride, padding, dilation)[0]
        out_shape, buffer_shape = (n, out_channels, ow), (n, ow, out_channels)
    else:
        n, h, w_ = shape[0], shape[2], shape[3]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
        oh, ow = output_size(shape[2:], kernel_size, stride, padding, dilation)
        out_shape = buffer_shape = (n, out_channels, oh, ow)
    uh = uw = 1
    hs, ws = h, w_
    if kh == 1 and kw == 1 and ph == 0 and pw == 0 and (sh > 1 or sw > 1):
        # 1x1 strided conv: pack only the pixels it reads, then run it with stride 1
        uh, uw, hs, ws, sh, sw = sh, sw, oh, ow, 1, 1
    ints = (n, h, w_, uh, uw, hs, ws, groups, cg, words_per_tap, out_channels // groups, oh, ow, kh, kw, sh, sw, ph,
            pw, dh, dw)
    mod = _kernel.native()
    scratch = mod.bconv_scratch(*ints) if mod is not None else 0
    geometry = mod.bconv_geometry(*ints) if mod is not None else b""
    if nd == 2:  # channels last: [N, C, OH, OW] with strides (OH OW C, 1, OW C, C)
        stride = (oh * ow * out_channels, 1, ow * out_channels, out_channels)
    else:
        stride = tuple(int(math.prod(buffer_shape[i + 1:])) for i in range(len(buffer_shape)))
    return NativePlan(nd, out_shape, buffer_shape, stride, scratch, ints, geometry)


_CONSTANTS: Dict[Tuple[int, Tuple[int, ...]], Tuple["weakref.ref", Tuple[int, int, int], torch.Tensor]] = {}


def tensor_state(t: torch.Tensor) -> Tuple[int, int]:
    """What a cache made from ``t`` must compare: its in-place version and its storage (``t.data = ...`` swaps the
    storage without a new version)."""
    return t._version, t.data_ptr()


def layer_constants(words: torch.Tensor, plan: NativePlan, isa: Optional[int] = None) -> torch.Tensor:
    """The kernel's layer constants of ``words`` at ``plan``'s geometry for code path ``isa`` (default: the one in
    use; :func:`bnn.deploy.kernel.conv_constants`), computed once and kept while ``words`` lives, is neither changed in
    place (its version) nor given another storage (``words.data = ...``, which keeps the version), and the code path
    stays (:func:`bnn.deploy.set_isa`; the constants of another path replace these)."""
    key = (id(words), plan.ints)
    hit = _CONSTANTS.get(key)
    isa = _kernel.get_isa() if isa is None else isa
    state = (*tensor_state(words), isa)
    if hit is not None and hit[0]() is words and hit[1] == state:
        return hit[2]
    consts = _kernel.conv_constants(words, plan.ints, isa=isa)
    _CONSTANTS[key] = (weakref.ref(words, lambda _, key=key: _CONSTANTS.pop(key, None)), state, consts)
    return consts


def native_supports(x: torch.Tensor, *buffers: Optional[torch.Tensor], sign_words: bool = False) -> bool:
    """The native kernel can compute on ``x`` with these buffers: built, float32 CPU non-empty input (int64 with
    ``sign_words``: a packed conv's sign-word input), CPU buffers of the kernel's dtypes (the int64 words first,
    then float32 vectors), contiguous, and a reduction of K < 2^23 bits per output (the words ``[G, CB, T, Wg, NR]``:
    K <= 64 T Wg), below which the kernels' float epilogue and int32 sums are exact."""
    dtype = torch.int64 if sign_words else torch.float32
    if _kernel.native() is None or x.dtype != dtype or x.device.type != "cpu" or x.numel() == 0:
        return False
    words = buffers[0] if buffers else None
    if words is not None and words.dim() == 5 and 64 * words.shape[2] * words.shape[3] >= 2 ** 23:
        return False
    for i, b in enumerate(buffers):
        if b is not None and (b.device.type != "cpu" or not b.is_contiguous()
                              or b.dtype != (torch.int64 if i == 0 else torch.float32)):
            return False
    return True


def native_applies(x: torch.Tensor, *buffers: Optional[torch.Tensor], sign_words: bool = False) -> bool:
    """:func:`native_supports`, and no TorchScript trace or ONNX export is recording the call (they need the
    pure-torch ops)."""
    return native_supports(x, *buffers, sign_words=sign_words) and not (
        torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


def binary_conv(x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
                threshold: Optional[torch.Tensor], out_channels: int, kernel_size: Sequence[int],
                stride: Sequence[int] = (), padding: Sequence[int] = (), dilation: Sequence[int] = (),
                groups: int = 1, use_native: Optional[bool] = None) -> torch.Tensor:
    """``mul_c * dot(sign(x), W_packed) + add_c`` for a packed conv (``kernel_size`` of length 1 or 2) or linear (``()``).

    ``x`` is ``[N, C, *spatial]`` (conv) or ``[*, C]`` (linear); padding is
    symmetric zero padding of the binarized input. ``use_native=None`` takes the
    C kernel when :func:`native_applies`, else the pure-torch path (any device,
    any float dtype); both give bit-identical results. The native result of a
    2-d conv is channels-last.
    """
    ks, st, pd, dl = tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation)
    native = native_applies(x, words, mul, add, threshold) if use_native is None else use_native
    if not native:
        return binary_conv_torch(x, words, mul, add, threshold, out_channels, ks, st, pd, dl, groups)
    if _kernel.native() is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it); use_native=False")
    words = words.to(torch.int64).contiguous()
    mul = mul.to(torch.float32).contiguous()
    add = None if add is None else add.to(torch.float32).contiguous()
    threshold = None if threshold is None else threshold.to(torch.float32).contiguous()
    if x.numel() == 0:
        return binary_conv_torch(x, words, mul, add, threshold, out_channels, ks, st, pd, dl, groups)
    plan = native_plan(tuple(x.shape), words.shape[3], out_channels, ks, st, pd, dl, groups)
    isa = _kernel.get_isa()
    return plan.run(x, words, mul, add, threshold, layer_constants(words, plan, isa), isa=isa)


# -- torch.library custom op: the packed conv as one opaque node for torch.compile / torch.export ----------------
def _op_output(x: torch.Tensor, out_channels: int, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    """An empty output of the op's shape and layout (the layout of :meth:`NativePlan.run`)."""
    nd = len(kernel_size)
    if nd == 0:
        return x.new_empty(*x.shape[:-1], out_channels)
    spatial = output_size(x.shape[2:], kernel_size, stride, padding, dilation)
    if nd == 1:
        return x.new_empty(x.shape[0], spatial[0], out_channels).transpose(1, 2)
    return torch.empty((x.shape[0], out_channels, *spatial), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


@torch.library.custom_op("bnn::binary_conv", mutates_args=())
def binary_conv_op(x: torch.Tensor, words: torch.Tensor, mul: torch.Tensor, add: Optional[torch.Tensor],
                   threshold: Optional[torch.Tensor], out_channels: int, kernel_size: List[int], stride: List[int],
                   padding: List[int], dilation: List[int], groups: int) -> torch.Tensor:
    """``torch.ops.bnn.binary_conv``: :func:`binary_conv` as a custom op (its output always has the native layout)."""
    if native_supports(x, words, mul, add, threshold):  # real tensors here: nothing is being traced
        return binary_conv(x, words, mul, add, threshold, out_channels, kernel_size, stride, padding, dilation, groups,
                           use_native=True)
    y = binary_conv_torch(x, words, mul, add, threshold, out_channels, kernel_size, stride, padding, dilation, groups)
    return _op_output(x, out_channels, kernel_size, stride, padding, dilation).copy_(y)  # the promised layout


@binary_conv_op.register_fake
def _binary_conv_fake(x, words, mul, add, threshold, out_channels, kernel_size, stride, padding, dilation, groups):
    return _op_output(x, out_channels, kernel_size, stride, padding, dilation)
