"""Packed binary layers: 1-bit weight words plus float32 per-channel scales.

A packed layer computes, in eval mode, exactly what the fake-binarized layer it
came from computes (``post(op(pre(x), wpre(W), b), x)``), with

* ``wpre(W) = alpha_c * S``, S in {-1, +1}: S is stored as bits
  (:func:`bnn.deploy.functional.pack_weight_bits`), alpha_c in ``scale``;
* binary input mode (``pre`` emits +-1: sign, ApproxSign, SwishSign, the eval
  mode of the stochastic sign, RSign = sign(x + b_c)): the input is binarized
  and packed on the fly, dot = K - 2 popcount(a XOR w) (XNOR-Net, Rastegari et
  al. 2016), zero padding left out of K;
* real input mode (any other ``pre``, kept as the submodule ``input_quantizer``):
  k-bit input codes (k <= 8) run the int8-input kernel (integer adds and
  subtracts), any other input meets W unpacked to +-1 for the forward only;
* ``y = dot * scale_c + shift_c`` (scale = alpha times any folded output scale,
  shift = the folded conv bias / output bias / BatchNorm), then ``post`` if it
  needs the float input (XNOR-Net's K; Bi-Real Net's real shortcut of a 2-d
  conv, ``y + gain_c * S(x)``, is added by the kernel's epilogue).

``packed_nbytes()`` / ``float_nbytes()`` give the memory of the layer packed
and of the same layer in float32, for :func:`bnn.summary`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..ops.activation import KBitActivationQuantizer
from ..ops.scale import RealShortcut
from . import functional as BF
from . import kernel as _K

_ISA = _K._state  # its "isa": the code path set_isa chose (read on every fast-path call)

__all__ = ["FORMAT_VERSION", "PackedLayer", "PackedConv1d", "PackedConv2d", "PackedLinear", "PackedFormatError",
           "SignWordsPassthrough"]

FORMAT_VERSION = 1
_FORMAT_KEY = "bnn_packed_format"
_is_compiling, _is_tracing = torch.compiler.is_compiling, torch.jit.is_tracing  # the fast path's checks, bound once


@dataclass(frozen=True)
class _CachedPlan:
    """A layer's kernel plan and constants for its last input shape, with the buffers they were made from."""

    shape: torch.Size
    words: torch.Tensor
    words_version: int  # ``words._version`` when the constants were made
    words_ptr: int  # and its storage (``.data =`` swaps it without a new version)
    scale: torch.Tensor
    shift: Optional[torch.Tensor]
    threshold: Optional[torch.Tensor]
    post: nn.Module
    post_done: bool  # the kernel's output is the layer's output (no post-process, or its real shortcut fused)
    shortcut: int  # the kernel adds a real shortcut S(x) (times shortcut_gain when not None): 0 no, 1 S(x) = x,
    # 2 S(x) pooled / repeated by the RealShortcut
    shortcut_gain: Optional[torch.Tensor]
    dtype: torch.dtype  # of the input: float32, or int64 sign words
    out_threshold: Optional[torch.Tensor]
    plan: BF.NativePlan
    consts: torch.Tensor  # the kernel's layer constants for these words at this geometry, for code path isa
    isa: int  # bnn.deploy.kernel.get_isa() when they were made

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel on ``x`` with these buffers; the real shortcut's S(x) made here when the kernel adds it."""
        sx = None if not self.shortcut else x if self.shortcut == 1 else self.post.shortcut(x, self.plan.out_shape[2:])
        return self.plan.run(x, self.words, self.scale, self.shift, self.threshold, self.consts, self.out_threshold,
                             sx, self.shortcut_gain, self.isa)


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
    input channel, -bias of RSign; None for the plain sign) and
    ``output_threshold`` (float32 per output channel, set by sign-bit chaining,
    :mod:`bnn.deploy.chain`: the layer then returns its output's sign words,
    int64 ``[N, H, W, ceil(out / 64)]``, bit set where ``y_c < output_threshold_c``).
    A 2-d conv with binary input, one group and no post-process also takes sign
    words as its input (its own ``input_threshold`` was applied by the layer that
    made them). Inference only.

    On the native (C kernel) path the layer keeps, for the last input shape, the
    :class:`~bnn.deploy.functional.NativePlan` of the kernel call (not saved), so
    that a call costs a few microseconds of Python. Every other call checks its
    input first (:meth:`check_input`: rank, channels, size, dtype, device) and
    raises a one-line error naming the layer (``layer_name``, set by the packer).
    Under ``torch.compile`` / ``torch.export`` the kernel is the custom op
    ``torch.ops.bnn.binary_conv``.
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
        self.register_buffer("packed_weight", torch.zeros(self._words_shape(), dtype=torch.int64))
        self.register_buffer("scale", torch.ones(self.out_channels))
        self.register_buffer("shift", torch.zeros(self.out_channels) if has_shift else None)
        self.register_buffer("input_threshold", torch.zeros(self.in_channels) if has_threshold else None)
        # set by sign-bit chaining (bnn.deploy.chain): the output is then the next packed conv's sign words
        self.register_buffer("output_threshold", None)
        self.input_quantizer = input_quantizer if input_quantizer is not None else nn.Identity()
        self.post_process = post_process if post_process is not None else nn.Identity()
        self.use_native: Optional[bool] = None  # None: the C kernel when it applies, False: pure torch
        self.layer_name = ""  # the layer's name in the packed model (set by the packer), for error messages

    def _words_shape(self) -> Tuple[int, ...]:
        """``[G, CB, T, Wg, NR]`` of the weight words (:mod:`bnn.deploy.functional`, format version 1)."""
        cg, coutg = self.in_channels // self.groups, self.out_channels // self.groups
        return (self.groups, -(-coutg // BF.NR), int(math.prod(self.kernel_size)), max(1, -(-cg // 64)), BF.NR)

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
        self._buffers.setdefault("output_threshold", None)  # saved before sign-bit chaining

    # -- sizes ----------------------------------------------------------------------------------------
    def packed_nbytes(self) -> int:
        """Bytes of this layer's tensors as stored (weight words + float32 scales + submodules)."""
        n = sum(b.numel() * b.element_size() for b in self.buffers(recurse=False) if b is not None)
        for mod in (self.input_quantizer, self.post_process):
            n += sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))
        return n

    def constants_nbytes(self) -> int:
        """Bytes of the kernel constants this layer keeps in memory (not saved) for its last input shape: the
        binary kernel's (tap offsets and bias table; on AVX2 also a rearranged copy of the weight bits or the
        nibble tables) and the int8 kernel's (the weights as bytes). 0 before its first native call."""
        n = 0
        plan = self.__dict__.get("_plan")
        if plan is not None:
            n += plan.consts.numel() * plan.consts.element_size()
        int8 = self.__dict__.get("_int8_consts")
        if int8 is not None:
            n += int8[2].numel() * int8[2].element_size()
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
    @property
    def label(self) -> str:
        """How errors name this layer: its name in the packed model (set at pack time), else its class."""
        name = self.__dict__.get("layer_name") or ""
        return f"packed layer '{name}'" if name else type(self).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fast path: the plan made for this input shape by an earlier call applies (float32 or sign-word CPU plain
        # tensor, the buffers it was checked with, no compile / trace): a few microseconds of Python per call
        if (type(x) is torch.Tensor and not self.training and self.use_native is not False and not _is_compiling()
                and not _is_tracing() and x.is_cpu):
            c = self.__dict__.get("_plan")
            if c is not None and x.shape == c.shape and x.dtype == c.dtype:
                b = self._buffers
                w = c.words
                if (b["packed_weight"] is w and w._version == c.words_version and w.data_ptr() == c.words_ptr
                        and c.isa == _ISA["isa"]
                        and b["scale"] is c.scale
                        and b["shift"] is c.shift and b["output_threshold"] is c.out_threshold
                        and (c.dtype == torch.int64 or b["input_threshold"] is c.threshold)
                        and self._modules["post_process"] is c.post
                        and (not c.shortcut or (c.post.enabled and c.post._buffers["gain"] is c.shortcut_gain))):
                    y = c.run(x)
                    return y if c.post_done else c.post(y, x)
            c8 = self.__dict__.get("_int8_plan")
            if c8 is not None and x.shape == c8[0] and x.dtype == torch.float32 and self._int8_key_matches(c8[1]):
                return self._post(c8[2].run(x), x)
        return self._forward_checked(x)

    def _real_shortcut(self, x: torch.Tensor) -> bool:
        """The post-process is Bi-Real Net's real shortcut of a 2-d conv (on a float input): y = out + gain_c * S(x),
        which the kernel adds in its epilogue."""
        post = self.post_process
        return type(post) is RealShortcut and post.enabled and self._kernel_dims == 2 and x.is_floating_point()

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The output post-process; a real shortcut as ``y + S(x) * gain_c`` (two roundings), the kernel's fused
        formula, on every path."""
        post = self.post_process
        if isinstance(post, nn.Identity):
            return y
        if self._real_shortcut(x):
            sx, gain = post.shortcut(x, y.shape[2:]), post.gain
            return y + sx if gain is None else y + sx * gain.to(y.dtype).view(1, -1, 1, 1)
        return post(y, x)

    def _forward_checked(self, x: torch.Tensor) -> torch.Tensor:
        """Every call the fast path does not take: check the input, then the native kernel or pure torch."""
        if self.training:
            raise RuntimeError(f"{self.label} is inference only: call .eval() (it cannot be trained)")
        self.check_input(x)
        if not self.binary_input:
            return self._post(self._forward_real_input(x), x)
        w, s, b, t, ot = self.packed_weight, self.scale, self.shift, self.input_threshold, self.output_threshold
        if ot is not None and not isinstance(self.post_process, nn.Identity):
            raise RuntimeError(f"{self.label}: an output_threshold (sign-bit chaining) needs post_process = "
                               f"nn.Identity, got {type(self.post_process).__name__}")
        signs_in = x.dtype == torch.int64
        if signs_in:
            t = None  # the words are the input's signs already (the producing layer applied this layer's threshold)
        if self.use_native is not False and BF.native_applies(x, w, s, b, t, ot, sign_words=signs_in):
            if type(x) is not torch.Tensor or torch.compiler.is_compiling():  # torch.compile / torch.export
                xin = BF.unsign_words(x, self.in_channels) if signs_in else x
                y = torch.ops.bnn.binary_conv(xin, w, s, b, t, self.out_channels, list(self.kernel_size),
                                              list(self.stride), list(self.padding), list(self.dilation), self.groups)
                return self._post(y, x) if ot is None else BF.sign_words(y, ot)
            shape = (x.shape[0], self.in_channels, x.shape[1], x.shape[2]) if signs_in else tuple(x.shape)
            plan = BF.native_plan(shape, w.shape[3], self.out_channels, self.kernel_size, self.stride,
                                  self.padding, self.dilation, self.groups)
            # the layer constants (tap offsets, padded-tap bias table; on AVX2 rearranged weight bits) of this
            # geometry and code path, once per input shape; they derive from the weight bits, so an in-place change
            # of the words (a new version, e.g. load_state_dict) or another set_isa drops the cached plan
            isa = _K.get_isa()
            consts = BF.layer_constants(w, plan, isa)
            post = self.post_process
            # a real shortcut (Bi-Real Net) is added by the kernel's epilogue: the input itself, or S(x) made by torch
            gain = post.gain if type(post) is RealShortcut else None
            shortcut = 0
            if self._real_shortcut(x) and (gain is None or (gain.dtype == torch.float32 and gain.is_contiguous()
                                                            and gain.is_cpu)):
                shortcut = 1 if tuple(x.shape) == plan.out_shape else 2
            c = self.__dict__["_plan"] = _CachedPlan(x.shape, w, w._version, w.data_ptr(), s, b, t, post,
                                                     bool(shortcut) or isinstance(post, nn.Identity), shortcut, gain,
                                                     x.dtype, ot, plan, consts, isa)
            y = c.run(x)
            return y if shortcut else self._post(y, x)
        xin = BF.unsign_words(x, self.in_channels) if signs_in else x
        y = BF.binary_conv_torch(xin, w, s, b, t, self.out_channels, self.kernel_size, self.stride, self.padding,
                                 self.dilation, self.groups)
        return self._post(y, x) if ot is None else BF.sign_words(y, ot)

    def _forward_real_input(self, x: torch.Tensor) -> torch.Tensor:
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
        if (self.use_native is not False and type(x) is torch.Tensor and not torch.compiler.is_compiling()
                and BF.native_applies(x, self.packed_weight, self.scale, self.shift)):
            w, cache = self.packed_weight, self.__dict__.get("_int8_consts")
            state = BF.tensor_state(w)
            if cache is None or cache[0] is not w or cache[1] != state:  # weights changed: new constants
                consts = _K.int8_conv_constants(w, self.out_channels, self.in_channels, self.kernel_size)
                cache = self.__dict__["_int8_consts"] = (w, state, consts)
            plan = _K.int8_plan(tuple(x.shape), cache[2], step, bits, mul, self.shift, *geometry)
            # kept for the next call of this shape while the buffers it was made from are unchanged (_int8_key)
            self.__dict__["_int8_plan"] = (x.shape, self._int8_key(), plan)
            return plan.run(x)
        return _K.int8_conv_reference(x, self.packed_weight, step, bits, mul, self.shift, *geometry)

    def _int8_key(self) -> tuple:
        """What an int8 plan depends on: the weight words, scale, shift and the quantizer's range (each tensor
        with its in-place version and its storage, which ``.data =`` swaps without a new version) and the
        quantizer's bit width (0 once it no longer emits codes)."""
        q = self._modules["input_quantizer"]
        b = self._buffers
        tensors = (b["packed_weight"], b["scale"], b["shift"], getattr(q, "running_absmax", None))
        return tuple((t, BF.tensor_state(t) if t is not None else None) for t in tensors) + (_int8_bits(q),)

    def _int8_key_matches(self, key: tuple) -> bool:
        now = self._int8_key()
        return now[-1] == key[-1] and all(a[0] is b[0] and a[1] == b[1] for a, b in zip(now[:-1], key[:-1]))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line error naming the layer unless ``x`` fits it (rank, channels, size, dtype, device)."""
        nd = len(self.kernel_size)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.label}: expects a tensor, got {type(x).__name__}")
        if x.dtype == torch.int64:
            self._check_sign_words(x)
        elif nd:
            want = "[N, C, L]" if nd == 1 else "[N, C, H, W]"
            if x.dim() != nd + 2:
                raise ValueError(f"{self.label}: expects a {nd + 2}-d input {want} with C = {self.in_channels}, "
                                 f"got shape {list(x.shape)}")
            if x.shape[1] != self.in_channels:
                raise ValueError(f"{self.label}: expects {self.in_channels} input channels (dim 1), got shape "
                                 f"{list(x.shape)}")
            out = BF.output_size(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation)
            if min(out) < 1:
                raise ValueError(f"{self.label}: input {list(x.shape)} is smaller than the (padded, dilated) kernel "
                                 f"{self.kernel_size}")
        elif x.dim() < 1 or x.shape[-1] != self.in_channels:
            raise ValueError(f"{self.label}: expects an input [*, {self.in_channels}] (in_features last), got shape "
                             f"{list(x.shape)}")
        if not x.is_floating_point() and x.dtype != torch.int64:
            raise TypeError(f"{self.label}: expects a floating-point input, got {x.dtype}")
        if x.device != self.packed_weight.device:
            raise ValueError(f"{self.label}: input is on {x.device} but the layer is on {self.packed_weight.device}; "
                             f"move one of them (.to(device))")
        self._check_buffers()

    def _check_sign_words(self, x: torch.Tensor) -> None:
        """An int64 input is sign words ``[N, H, W, ceil(in_channels / 64)]`` (sign-bit chaining), which only a 2-d
        conv with binary input, one group and no output post-process takes."""
        if (self._kernel_dims != 2 or not self.binary_input or self.groups != 1
                or not isinstance(self.post_process, nn.Identity)):
            raise TypeError(f"{self.label}: expects a floating-point input, got {x.dtype} (sign words are an input "
                            f"only of a 2-d packed conv with binary input, groups=1 and no post_process)")
        nw = -(-self.in_channels // 64)
        if x.dim() != 4 or x.shape[3] != nw:
            raise ValueError(f"{self.label}: expects sign words [N, H, W, {nw}] (int64, {self.in_channels} channels) "
                             f"or a float input [N, {self.in_channels}, H, W], got an int64 tensor of shape "
                             f"{list(x.shape)}")
        if min(BF.output_size(x.shape[1:3], self.kernel_size, self.stride, self.padding, self.dilation)) < 1:
            raise ValueError(f"{self.label}: sign words of {x.shape[1]}x{x.shape[2]} pixels are smaller than the "
                             f"(padded, dilated) kernel {self.kernel_size}")

    def _check_buffers(self) -> None:
        """The buffers have the sizes of this layer's geometry (a replaced buffer cannot make the kernel read
        past its end)."""
        expected = {"packed_weight": self._words_shape(), "scale": (self.out_channels,),
                    "shift": (self.out_channels,), "input_threshold": (self.in_channels,),
                    "output_threshold": (self.out_channels,)}
        for name, shape in expected.items():
            t = self._buffers.get(name)
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"{self.label}: buffer {name!r} has shape {list(t.shape)}, this layer needs "
                                 f"{list(shape)}; load a state dict packed for this layer")

    def __getstate__(self):
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.pop("_plan", None)  # caches, not part of the saved format
        state.pop("_int8_consts", None)
        state.pop("_int8_plan", None)
        return state

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


class SignWordsPassthrough(nn.Module):
    """An activation between two sign-chained packed convs (:mod:`bnn.deploy.chain`): sign words (int64) pass
    unchanged (the producing conv applied this activation in its output threshold), any other input goes through
    ``module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dtype == torch.int64 else self.module(x)
