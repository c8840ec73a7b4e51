"""Packed binary layers: 1-bit weight words plus float32 per-channel scales.

A packed layer computes, in eval mode, exactly what the fake-binarized layer it
came from computes (``post(op(pre(x), wpre(W), b), x)``), with

* ``wpre(W) = alpha_c * S``, S in {-1, +1}: S is stored as bits
  (:func:`bnn.deploy.functional.pack_weight_bits`), alpha_c in ``scale``;
* binary input mode (``pre`` emits +-1: sign, ApproxSign, SwishSign, the eval
  mode of the stochastic sign, RSign = sign(x + b_c)): the input is binarized
  and packed on the fly, dot = K - 2 popcount(a XOR w) (XNOR-Net, Rastegari et
  al. 2016; REFERENCE.md section 5), zero padding left out of K;
* real input mode (any other ``pre``, kept as the submodule ``input_quantizer``):
  W is unpacked to +-1 for the forward only;
* ``y = dot * scale_c + shift_c`` (scale = alpha times any folded output scale,
  shift = the folded conv bias / output bias / BatchNorm), then ``post`` if it
  needs the float input (XNOR-Net's K).

``packed_nbytes()`` / ``float_nbytes()`` give the memory of the layer packed
and of the same layer in float32, for :func:`bnn.summary`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..ops.activation import KBitActivationQuantizer
from . import functional as BF
from . import kernel as _K
from .kernel import _state as _ISA  # _ISA["isa"]: the code path chosen by bnn.deploy.set_isa (-1: best)

__all__ = ["FORMAT_VERSION", "PackedLayer", "PackedConv1d", "PackedConv2d", "PackedLinear", "PackedFormatError"]

FORMAT_VERSION = 1
_FORMAT_KEY = "bnn_packed_format"


def _exporting_slow() -> bool:
    return torch.onnx.is_in_onnx_export()


def _exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()``, read from its flags directly (it runs on every forward)."""
    global _exporting
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        def fast() -> bool:
            return GLOBALS.in_onnx_export or _flags._is_onnx_exporting

        fast()
        _exporting = fast
    except Exception:  # another torch version: the public function
        _exporting = _exporting_slow
    return _exporting()


def _storage_uses(t: torch.Tensor) -> int:
    """Tensors sharing the storage of ``t`` (``t`` included), plus 1 for the storage object made here."""
    try:
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)
    except Exception:  # no such private API: never reuse
        return 1 << 30


def _int8_bits(q: nn.Module) -> int:
    """The bit width k of an input quantizer whose eval output is k-bit codes times a step (k <= 8), else 0."""
    if isinstance(q, KBitActivationQuantizer) and q.enabled and q.ratio == 1.0 and q.bits <= 8 and not q.training:
        return q.bits
    return 0


class PackedFormatError(RuntimeError):
    """A packed layer saved by an incompatible version of bnn."""


def _check_version(found, where: str) -> None:
    if found != FORMAT_VERSION:
        raise PackedFormatError(
            f"{where}: packed layer saved with bnn packed format version {found!r}, this bnn reads version "
            f"{FORMAT_VERSION}; re-pack the fake-binarized model with this bnn (bnn.pack_binary_model)"
        )


class PackedLayer(nn.Module):
    """Common base of :class:`PackedConv1d`, :class:`PackedConv2d` and :class:`PackedLinear`.

    Buffers (all in the state dict): ``packed_weight`` (int64 words, 1 bit per
    weight, layout ``[G, CB, T, Wg, 32]``), ``scale`` and ``shift`` (float32 per
    output channel; ``shift`` may be None), ``input_threshold`` (float32 per
    input channel, -bias of RSign; None for the plain sign). Inference only.

    On the native (C kernel) path the layer caches, for the last input shape, the
    kernel arguments and one output and one scratch buffer (not saved): the output
    buffer is reused when no tensor returned earlier (nor a view of one) is still
    alive, since a fresh large allocation costs page faults at batch 1; the
    returned tensor is always a new alias of it.
    """

    _kernel_dims = 0
    weight_bits = 1  # bit width of the stored weights (read by bnn.summary)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, ...] = (),
                 stride: Tuple[int, ...] = (), padding: Tuple[int, ...] = (), dilation: Tuple[int, ...] = (),
                 groups: int = 1, binary_input: bool = True, input_quantizer: Optional[nn.Module] = None,
                 post_process: Optional[nn.Module] = None, has_shift: bool = False,
                 has_threshold: bool = False) -> None:
        super().__init__()
        self.format_version = FORMAT_VERSION
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation, self.groups = tuple(padding), tuple(dilation), int(groups)
        self.binary_input = bool(binary_input)
        cg, coutg = self.in_channels // self.groups, self.out_channels // self.groups
        shape = (self.groups, -(-coutg // BF.NR), int(math.prod(self.kernel_size)), max(1, -(-cg // 64)), BF.NR)
        self.register_buffer("packed_weight", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("scale", torch.ones(self.out_channels))
        self.register_buffer("shift", torch.zeros(self.out_channels) if has_shift else None)
        self.register_buffer("input_threshold", torch.zeros(self.in_channels) if has_threshold else None)
        self.input_quantizer = input_quantizer if input_quantizer is not None else nn.Identity()
        self.post_process = post_process if post_process is not None else nn.Identity()
        self.use_native: Optional[bool] = None  # None: the C kernel when it applies, False: pure torch

    # -- format version ---------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {_FORMAT_KEY: FORMAT_VERSION}

    def set_extra_state(self, state) -> None:
        found = state.get(_FORMAT_KEY) if isinstance(state, dict) else None
        _check_version(found, type(self).__name__)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "_extra_state"
        if key not in state_dict:
            raise PackedFormatError(f"{prefix.rstrip('.') or type(self).__name__}: the state dict has no packed format "
                                    f"version (not saved by bnn.deploy); re-pack the model with bnn.pack_binary_model")
        try:
            _check_version(state_dict[key].get(_FORMAT_KEY) if isinstance(state_dict[key], dict) else None,
                           prefix.rstrip(".") or type(self).__name__)
        except PackedFormatError:
            raise
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def __setstate__(self, state) -> None:  # torch.load of a whole pickled model
        _check_version(state.get("format_version"), type(self).__name__)
        super().__setstate__(state)

    # -- sizes ----------------------------------------------------------------------------------------
    def packed_nbytes(self) -> int:
        """Bytes of this layer's tensors as stored (weight words + float32 scales + submodules)."""
        n = sum(b.numel() * b.element_size() for b in self.buffers(recurse=False) if b is not None)
        for mod in (self.input_quantizer, self.post_process):
            n += sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))
        return n

    def float_nbytes(self) -> int:
        """Bytes of the same layer's weight (and bias) in float32."""
        return 4 * (self.packed_weight_numel + (self.out_channels if self.shift is not None else 0))

    @property
    def packed_weight_numel(self) -> int:
        """Number of binary weights (out * in/groups * prod(kernel))."""
        return self.out_channels * (self.in_channels // self.groups) * int(math.prod(self.kernel_size))

    def macs_per_output(self) -> int:
        """Binary multiply-accumulates per output value: in/groups * prod(kernel)."""
        return (self.in_channels // self.groups) * int(math.prod(self.kernel_size))

    def weight_signs(self, dtype=torch.float32) -> torch.Tensor:
        """The +-1 weight ``[out, in/groups, *kernel]`` (unpacked; for inspection and export)."""
        return BF.unpack_weight_signs(self.packed_weight, self.out_channels, self.in_channels // self.groups,
                                      self.kernel_size, dtype)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(f"{type(self).__name__} is inference only: call .eval() (it cannot be trained)")
        # fast path: the kernel arguments cached for this input shape still hold (same buffers, float32 CPU
        # plain tensor, not tracing or exporting), so the per-call Python work stays a few microseconds
        st = self.__dict__.get("_native_plan")
        if st is not None and st[0] == x.shape and type(x) is torch.Tensor and x.dtype == torch.float32 and x.is_cpu:
            b = self._buffers
            w = b["packed_weight"]
            if not (w is st[2] and b["scale"] is st[3] and b["shift"] is st[4] and b["input_threshold"] is st[5]
                    and w.data_ptr() == st[6][3] and w._version == st[11] and self.use_native is not False
                    and self.binary_input
                    and not torch.jit.is_tracing()
                    and not _exporting()):
                st = None
        else:
            st = None
        y = self._run_fast(st, x) if st is not None else self._forward_slow(x)
        if not isinstance(self.post_process, nn.Identity):
            y = self.post_process(y, x)
        return y

    def _run_fast(self, st, x: torch.Tensor) -> torch.Tensor:
        """Call the C kernel with the cached arguments; output and scratch buffers are reused when free."""
        plan = st[1]
        nd = plan[0]
        if nd == 2:
            if not x.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
        elif nd == 1:
            x = x.transpose(1, 2).contiguous()
        elif not x.is_contiguous():
            x = x.contiguous()
        # Reused buffers (fresh large allocations cost page faults): taken out of the cache while in use, so
        # that another Python thread allocates its own; the output is reused only when no alias handed out
        # earlier (nor any view of it) is alive, i.e. when its storage has no user but the cached tensor.
        bufs = st[7]
        out, a = bufs
        bufs[0] = bufs[1] = None
        if out is None or _storage_uses(out) > 2:
            out = st[8]()
        if a is None:
            a = torch.empty(plan[5], dtype=torch.int64)
        p = st[6]
        st[9].bconv(x.data_ptr(), p[0], a.data_ptr(), p[3], p[4], p[5], out.data_ptr(), *plan[6], _ISA["isa"],
                    torch.get_num_threads(), st[10].data_ptr())
        # hand out an alias (never the cached tensor itself), made before the buffers go back to the cache
        if nd == 1:
            y = out.transpose(1, 2)
        elif nd == 0:
            y = out.view(*st[0][:-1], self.out_channels)
        else:
            y = out.detach()
        bufs[0], bufs[1] = out, a
        return y

    def _forward_slow(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary_input and self._fast_ok(x):
            # cache the kernel arguments for this input shape: the per-call Python work stays small
            w, s, b, t = self.packed_weight, self.scale, self.shift, self.input_threshold
            shape2 = x.shape if self.kernel_size else x.reshape(-1, self.in_channels).shape
            plan = BF.native_plan(shape2, w.shape[3], self.out_channels, self.kernel_size, self.stride,
                                  self.padding, self.dilation, self.groups, self.in_channels)
            nd, n, oh, ow, cout = plan[:5]
            if nd == 2:
                make = lambda: torch.empty((n, cout, oh, ow), dtype=torch.float32,  # noqa: E731
                                           memory_format=torch.channels_last)
            elif nd == 1:
                make = lambda: torch.empty((n, ow, cout), dtype=torch.float32)  # noqa: E731
            else:
                make = lambda: torch.empty((ow, cout), dtype=torch.float32)  # noqa: E731
            ptrs = (0 if t is None else t.data_ptr(), 0, 0, w.data_ptr(), s.data_ptr(),
                    0 if b is None else b.data_ptr())
            consts = BF._kernel.conv_constants(w, plan[6])  # per-layer constants, once per input shape
            # the constants hold a copy of the weight bits: the cache is dropped when they change in place
            st = (x.shape, plan, w, s, b, t, ptrs, [None, None], make, BF._kernel.native(), consts, w._version)
            self.__dict__["_native_plan"] = st
            return self._run_fast(st, x)
        if self.binary_input:
            return BF.binary_conv(x, self.packed_weight, self.scale, self.shift, self.input_threshold,
                                  self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
                                  self.groups, self.in_channels, use_native=self._native(x))
        bits = _int8_bits(self.input_quantizer)
        if bits and self.groups == 1 and self._kernel_dims in (0, 2):
            return self._forward_int8(x, bits)
        xq = self.input_quantizer(x)
        w = self.weight_signs(xq.dtype).to(xq.device)
        y = BF._conv(xq, w, self.stride, self.padding, self.dilation, self.groups)
        return BF._epilogue(y, self.scale, self.shift, 1 if self.kernel_size else y.dim() - 1)

    def _forward_int8(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        """k-bit input codes (k <= 8) times +-1 weights: integer adds and subtracts (the native int8 kernel
        :func:`bnn.deploy.kernel.int8_conv`, or its pure-torch twin, which gives the same numbers).
        y = float(sum code * s) * (scale_c * step) + shift_c, with step the quantizer's grid step."""
        q = self.input_quantizer
        step = (q.running_absmax / (2 ** (bits - 1) - 1)).clamp_min(torch.finfo(x.dtype).tiny).to(x.dtype)
        mul = self.scale.to(x.dtype) * step
        geometry = (self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation)
        if self._fast_ok(x):
            w, cache = self.packed_weight, self.__dict__.get("_int8_consts")
            if cache is None or cache[0] is not w or cache[1] != w._version:  # weights changed: new constants
                consts = _K.int8_conv_constants(w, self.out_channels, self.in_channels, self.kernel_size)
                cache = self.__dict__["_int8_consts"] = (w, w._version, consts)
            return _K.int8_conv(x, cache[2], step, bits, mul, self.shift, *geometry)
        return _K.int8_conv_reference(x, self.packed_weight, step, bits, mul, self.shift, *geometry)

    def _fast_ok(self, x: torch.Tensor) -> bool:
        """The native kernel applies directly: float32 CPU input and buffers, not tracing/exporting, non-empty."""
        if self.use_native is False or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
            return False
        if type(x) is not torch.Tensor:  # FakeTensor, FunctionalTensor, ... (export, torch.compile): no data
            return False
        if BF._kernel.native() is None or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        w, s, b, t = self.packed_weight, self.scale, self.shift, self.input_threshold
        return (w.dtype == torch.int64 and w.is_contiguous() and s.dtype == torch.float32 and s.is_contiguous()
                and (b is None or (b.dtype == torch.float32 and b.is_contiguous()))
                and (t is None or (t.dtype == torch.float32 and t.is_contiguous())))

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_native_plan", None)  # caches, not part of the saved format
        state.pop("_int8_consts", None)
        return state

    def _native(self, x: torch.Tensor) -> Optional[bool]:
        if self.use_native is False or torch.onnx.is_in_onnx_export():
            return False
        return None

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}"
        if self.kernel_size:
            s += f", kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
            if any(d != 1 for d in self.dilation):
                s += f", dilation={self.dilation}"
            if self.groups != 1:
                s += f", groups={self.groups}"
        s += ", input=" + ("binary" if self.binary_input else "real")
        return s


class PackedConv2d(PackedLayer):
    """Packed :class:`bnn.layers.Conv2d` (stride, zero padding, dilation, groups)."""

    _kernel_dims = 2


class PackedConv1d(PackedLayer):
    """Packed :class:`bnn.layers.Conv1d` (stride, zero padding, dilation, groups)."""

    _kernel_dims = 1


class PackedLinear(PackedLayer):
    """Packed :class:`bnn.layers.Linear` (input ``[*, in_features]``)."""

    _kernel_dims = 0

    def __init__(self, in_features: int, out_features: int, **kwargs) -> None:
        super().__init__(in_features, out_features, **kwargs)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels
