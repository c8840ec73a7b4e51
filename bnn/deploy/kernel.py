"""Loader of the optional native kernel ``bnn.deploy._kernel`` (plain C, OpenMP), and its Python entry points.

``native()`` returns the extension module, or ``None`` when it was not built
(no compiler at install time) or was switched off with ``BNN_DISABLE_KERNEL=1``;
every packed layer then runs its pure-torch path, which gives the same numbers.

* binary-input convs (``bconv``; XNOR-Net, Rastegari et al. 2016): dot = K - 2 popcount(a XOR w),
  AVX-512 VPOPCNTDQ, AVX2 or scalar chosen at run time; :func:`conv_constants` makes the per-layer
  constants once per input shape (the packed layers cache them). On AVX2, stride-1 convs (groups 1) with few
  weights per output position look the popcounts up in per-weight nibble tables, 16 output positions per
  ``vpshufb``; the others run nibble-split xor tiles. ``BNN_NIBBLE_TABLES=0`` / ``1`` in the environment
  when the constants are made: never / wherever possible (for comparisons). :func:`conv_tiles` names the
  tiles a layer runs;
* int8-input, 1-bit-weight convs and linear layers (:func:`int8_conv`): the k-bit input codes
  (k <= 8) are added or subtracted as the weight bits say (``vpmaddubsw`` on AVX2);
  :func:`int8_conv_reference` is the pure-torch twin (the same numbers).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["native", "kernel_available", "available_isas", "set_isa", "get_isa", "conv_constants", "conv_tiles",
           "int8_conv", "int8_plan", "Int8Plan", "int8_conv_reference", "int8_conv_constants", "int8_codes"]

_ISA_CODES = {"scalar": 0, "avx2": 1, "avx512": 2}
_state = {"module": None, "tried": False, "isa": -1}


def native():
    """The extension module, or ``None`` (pure-torch fallback)."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("BNN_DISABLE_KERNEL", "0") not in ("", "0"):
            return None
        try:
            from . import _kernel  # type: ignore[attr-defined]
        except ImportError:
            _kernel = None
        _state["module"] = _kernel
    return _state["module"]


def kernel_available() -> bool:
    """True when the native xnor-popcount kernel is built and usable."""
    return native() is not None


def available_isas() -> List[str]:
    """Instruction sets the kernel can use on this CPU (``[]`` without the kernel), slowest first."""
    mod = native()
    return list(mod.isas()) if mod is not None else []


def set_isa(isa: Optional[str]) -> None:
    """Force one code path of the kernel (``"scalar"``, ``"avx2"``, ``"avx512"``); ``None`` picks the best.

    It applies to every later call: a packed layer remakes its layer constants for the new path on its next call."""
    if isa is None:
        _state["isa"] = -1
        return
    if isa not in available_isas():
        raise ValueError(f"bnn.deploy.set_isa: {isa!r} is not available on this CPU; available: {available_isas()}")
    _state["isa"] = _ISA_CODES[isa]


def get_isa() -> int:
    """The ISA code the kernel calls are given: 0 scalar, 1 AVX2, 2 AVX-512 (:func:`set_isa`), -1 for the best."""
    return _state["isa"]


def conv_constants(words: torch.Tensor, ints: Sequence[int], num_threads: Optional[int] = None,
                   isa: Optional[int] = None) -> torch.Tensor:
    """The layer constants of one packed conv at one input geometry, for ``bconv(..., consts.data_ptr(), ..., isa)``.

    ``ints`` are the integer kernel arguments of a :func:`bnn.deploy.functional.native_plan` (its ``ints``),
    ``isa`` the code path they are for (:func:`get_isa`'s codes; default: the one in use).
    The constants (tap offsets, pixel classes, the bias table ``Tv * Cg + 2 * popcount`` of the padded
    taps, and on AVX2 the nibble-split weights or the nibble tables) depend only on the weight words, that
    geometry and the code path: computing them once per layer and input shape, instead of on every call, saves
    their cost at batch 1. They must be recomputed when the weight words change. The kernel checks that
    they were made for the geometry and the code path it is given.
    """
    mod = native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it)")
    if words.dtype != torch.int64 or not words.is_contiguous() or words.device.type != "cpu":
        raise ValueError("bnn.deploy.conv_constants: words must be a contiguous int64 CPU tensor")
    isa = get_isa() if isa is None else isa
    n = mod.bconv_constants(words.data_ptr(), 0, *ints, isa, 1)
    consts = torch.empty(n, dtype=torch.int64)
    mod.bconv_constants(words.data_ptr(), consts.data_ptr(), *ints, isa,
                        torch.get_num_threads() if num_threads is None else num_threads, n)
    return consts


def conv_tiles(ints: Sequence[int]) -> str:
    """The name of the tiles the native kernel runs for a conv geometry (:func:`bnn.deploy.functional.native_plan`'s
    ``ints``) with the ISA in use: ``avx512-vpopcntq``, ``avx2-nibble-table``, ``avx2-nibble-xor`` or
    ``scalar-popcnt``."""
    mod = native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it)")
    return mod.bconv_tiles(*ints, get_isa())


# -- int8-input / 1-bit-weight layers ---------------------------------------------------------------
def _geometry(kernel_size, stride, padding, dilation):
    if len(kernel_size) == 0:
        return (1, 1), (1, 1), (0, 0), (1, 1)
    if len(kernel_size) != 2:
        raise ValueError(f"bnn.deploy.int8_conv: 2-D convs and linear layers only, got kernel_size {kernel_size}")
    return tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation)


def int8_conv_constants(words: torch.Tensor, out_channels: int, in_channels: int, kernel_size) -> torch.Tensor:
    """The layer constants of :func:`int8_conv` (the +-1 weights as bytes, and 128 * their sums), from the
    packed weight words ``[1, CB, T, Wg, 32]`` of a ``groups=1`` layer. Recompute when the words change."""
    mod = native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it)")
    if words.dim() != 5 or words.shape[0] != 1:
        raise ValueError("bnn.deploy.int8_conv_constants: groups=1 packed weight words [1, CB, T, Wg, 32] expected")
    words = words.to(torch.int64).contiguous()
    taps = words.shape[2]
    n = mod.qconv_constants(0, 0, out_channels, in_channels, taps)
    consts = torch.empty(n, dtype=torch.uint8)
    mod.qconv_constants(words.data_ptr(), consts.data_ptr(), out_channels, in_channels, taps)
    return consts


def int8_codes(x: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """clamp(round(x / step), -2^(bits-1), 2^(bits-1) - 1): the integer codes of the symmetric k-bit
    quantizer (:class:`bnn.ops.KBitActivationQuantizer`; round half to even, like ``torch.round``)."""
    qmax = 2 ** (bits - 1) - 1
    return (x / step).round().clamp(-qmax - 1, qmax)


def int8_conv_reference(x: torch.Tensor, words: torch.Tensor, step: torch.Tensor, bits: int, mul: torch.Tensor,
                        add: Optional[torch.Tensor], out_channels: int, kernel_size=(), stride=(), padding=(),
                        dilation=()) -> torch.Tensor:
    """Pure-torch :func:`int8_conv`: the same numbers (the integer dot products are exact in float32 for
    |dot| < 2^24), on any device, and traceable."""
    from .functional import _conv, _epilogue, unpack_weight_signs

    cdim = 1 if kernel_size else x.dim() - 1
    codes = int8_codes(x, step.to(x.dtype), bits)
    w = unpack_weight_signs(words, out_channels, x.shape[cdim], kernel_size, dtype=x.dtype).to(x.device)
    dot = _conv(codes, w, stride, padding, dilation, 1)
    return _epilogue(dot, mul, add, cdim)


@dataclass(frozen=True)
class Int8Plan:
    """One :func:`int8_conv` call's checked arguments for one input shape: :meth:`run` is the whole call
    (the packed layers keep the plan of their last input shape, so a call costs a few microseconds of Python)."""

    conv: bool  # [N, C, H, W] input (channels-last result), else [*, C] rows
    out_shape: Tuple[int, ...]
    step: float
    qmin: int
    qmax: int
    consts: torch.Tensor
    mul: torch.Tensor
    add: Optional[torch.Tensor]
    ints: Tuple[int, ...]  # N, H, W, Cin, Cout, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel on float32 CPU ``x`` of the planned shape."""
        if self.conv:
            xc = x.contiguous(memory_format=torch.channels_last)
            out = torch.empty(self.out_shape, dtype=torch.float32, memory_format=torch.channels_last)
        else:
            xc = x.reshape(-1, self.ints[3]).contiguous()
            out = torch.empty(self.out_shape, dtype=torch.float32)
        if out.numel():
            native().qconv(xc.data_ptr(), self.step, self.qmin, self.qmax, self.consts.data_ptr(), self.mul.data_ptr(),
                           0 if self.add is None else self.add.data_ptr(), out.data_ptr(), *self.ints, get_isa(),
                           torch.get_num_threads())
        return out


def int8_plan(shape: Sequence[int], consts: torch.Tensor, step: torch.Tensor, bits: int, mul: torch.Tensor,
              add: Optional[torch.Tensor], out_channels: int, kernel_size=(), stride=(), padding=(),
              dilation=()) -> Int8Plan:
    """The checked :class:`Int8Plan` of :func:`int8_conv` for a float32 CPU input of ``shape``."""
    mod = native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it)")
    if not 1 <= bits <= 8:
        raise ValueError(f"bnn.deploy.int8_conv: bits must be in 1..8, got {bits}")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _geometry(kernel_size, stride, padding, dilation)
    cin = shape[1] if kernel_size else shape[-1]
    if consts.dtype != torch.uint8 or consts.numel() != mod.qconv_constants(0, 0, out_channels, cin, kh * kw):
        raise ValueError(f"bnn.deploy.int8_conv: the constants were not made for {cin} -> {out_channels} channels "
                         f"and kernel {tuple(kernel_size)} (int8_conv_constants)")
    if mul.numel() != out_channels or (add is not None and add.numel() != out_channels):
        raise ValueError(f"bnn.deploy.int8_conv: mul and add need {out_channels} values")
    qmax = 2 ** (bits - 1) - 1
    mul = mul.to(torch.float32).contiguous()
    add = None if add is None else add.to(torch.float32).contiguous()
    if kernel_size:
        n, c, h, w = shape
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        out_shape = (n, out_channels, oh, ow)
    else:
        c, rows = shape[-1], int(math.prod(shape[:-1]))
        n, h, w, oh, ow = 1, 1, rows, 1, rows
        out_shape = (*shape[:-1], out_channels)
    ints = (n, h, w, c, out_channels, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
    return Int8Plan(bool(kernel_size), tuple(out_shape), float(step), -qmax - 1, qmax, consts, mul, add, ints)


def int8_conv(x: torch.Tensor, consts: torch.Tensor, step: torch.Tensor, bits: int, mul: torch.Tensor,
              add: Optional[torch.Tensor], out_channels: int, kernel_size=(), stride=(), padding=(),
              dilation=()) -> torch.Tensor:
    """``float(dot) * mul_c + add_c`` with ``dot = sum code(x) * s`` for int8 input codes and +-1 weights.

    ``code(x) = clamp(round(x / step), -2^(bits-1), 2^(bits-1) - 1)`` (bits <= 8), zero padding is code 0.
    The weights ``s`` come from :func:`int8_conv_constants`. ``x`` is a float32 CPU tensor ``[N, C, H, W]``
    (conv; the result is channels-last) or ``[*, C]`` (``kernel_size=()``: a linear layer). The products are
    additions and subtractions of the codes chosen by the weight bits (``vpmaddubsw`` on AVX2), exactly
    :func:`int8_conv_reference`.
    """
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("bnn.deploy.int8_conv: float32 CPU input expected; use int8_conv_reference")
    return int8_plan(tuple(x.shape), consts, step, bits, mul, add, out_channels, kernel_size, stride, padding,
                     dilation).run(x)
