"""A per-layer report of what is binarized: bit widths, sizes, MACs (like Larq's ``summary``).

Sizes count every parameter at 32 bits, except binarized weights at 1 bit.
A packed layer (from :func:`bnn.pack_binary_model`) reports its own sizes
through ``packed_nbytes()`` and ``float_nbytes()``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .layers import BinaryLayerMixin
from .ops import Binarizer

__all__ = ["LayerSummary", "ModelSummary", "summary"]


@dataclasses.dataclass
class LayerSummary:
    name: str
    type: str
    binary_input: bool
    weight_bits: int
    params: int
    macs: int
    float_bytes: int
    bytes: int


@dataclasses.dataclass
class ModelSummary:
    layers: List[LayerSummary]
    params_by_bits: Dict[int, int]
    float_bytes: int
    bytes: int

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def binary_macs(self) -> int:
        """MACs of the layers whose weights are 1-bit."""
        return sum(layer.macs for layer in self.layers if layer.weight_bits == 1)

    @property
    def compression_ratio(self) -> float:
        return self.float_bytes / self.bytes if self.bytes else math.inf

    def __str__(self) -> str:
        total = self.total_macs or 1
        header = f"{'layer':<36} {'type':<16} {'in':>3} {'w bits':>6} {'params':>10} {'MACs':>13} {'MAC %':>6} {'fp32 KiB':>9} {'KiB':>9}"
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<36.36} {layer.type:<16.16} {'1b' if layer.binary_input else 'fp':>3} {layer.weight_bits:>6} "
                f"{layer.params:>10,} {layer.macs:>13,} {100.0 * layer.macs / total:>5.1f}% "
                f"{layer.float_bytes / 1024:>9.1f} {layer.bytes / 1024:>9.1f}"
            )
        lines.append("-" * len(header))
        for bits, count in sorted(self.params_by_bits.items()):
            lines.append(f"{bits:>2}-bit parameters: {count:,}")
        lines.append(f"size float32: {self.float_bytes / 2**20:.2f} MiB; binarized: {self.bytes / 2**20:.2f} MiB; "
                     f"compression {self.compression_ratio:.2f}x")
        lines.append(f"MACs: {self.total_macs:,}; in 1-bit-weight layers: {100.0 * self.binary_macs / total:.1f}%")
        return "\n".join(lines)


def _weight_bits(module: nn.Module) -> int:
    bits = getattr(module, "weight_bits", None)  # packed layers say it themselves
    if isinstance(bits, int):
        return bits
    if isinstance(module, BinaryLayerMixin):
        wpre = module.weight_pre_process
        if isinstance(wpre, Binarizer) and wpre.enabled and wpre.weight_bits:
            return wpre.weight_bits
    return 32


def _binary_input(module: nn.Module) -> bool:
    if getattr(module, "binary_input", False) is True:
        return True
    pre = getattr(module, "activation_pre_process", None)
    return isinstance(pre, Binarizer) and pre.sign_threshold() is not None


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    per_output = getattr(module, "macs_per_output", None)
    if callable(per_output):
        if out.dtype == torch.int64:  # the sign words [N, H, W, words] of a sign-chained packed conv
            return int(per_output()) * out.shape[1] * out.shape[2] * int(module.out_channels)
        return int(per_output()) * (out.numel() // out.shape[0])
    if isinstance(module, nn.modules.conv._ConvNd):
        return (out.numel() // out.shape[0]) * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return (out.numel() // out.shape[0]) * module.in_features
    return 0


def _is_compute_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or callable(getattr(module, "packed_nbytes", None))


def _checked_input_size(input_size) -> tuple:
    """``input_size`` as a tuple of positive ints, or a one-line ``TypeError`` / ``ValueError`` saying what it must be."""
    wanted = "a sequence of positive ints, one sample's shape without the batch dimension, e.g. (3, 32, 32)"
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise TypeError(f"summary: input_size must be {wanted}; got {input_size!r} ({type(input_size).__name__})")
    dims = tuple(input_size)
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"summary: input_size must be {wanted}; got {dims!r}")
    return tuple(int(d) for d in dims)


def summary(model: nn.Module, input_size: Sequence[int], print_fn=print, device: Optional[torch.device] = None) -> ModelSummary:
    """Run one sample of shape ``input_size`` (no batch dimension) through ``model`` and report.

    Prints (through ``print_fn``; ``None`` to stay silent) one row per conv /
    linear layer: name, type, input binarized or not, weight bits, parameters,
    MACs and MAC share, float32 and binarized size; then parameters by bit
    width, model size with 1-bit binarized weights against float32, the
    compression ratio and the share of MACs in 1-bit-weight layers. Returns the
    :class:`ModelSummary`.
    """
    input_size = _checked_input_size(input_size)
    rows: Dict[str, LayerSummary] = {}
    binary_weights: Dict[str, int] = {}
    handles = []
    compute = [(name, module) for name, module in model.named_modules() if _is_compute_layer(module)]
    for name, module in compute:
        bits = _weight_bits(module)
        params = sum(p.numel() for p in module.parameters())
        if callable(getattr(module, "packed_nbytes", None)):
            weight = int(getattr(module, "packed_weight_numel", 0))
            params += weight
            fbytes, nbytes = int(module.float_nbytes()), int(module.packed_nbytes())
        else:
            weight = module.weight.numel()
            fbytes = 4 * params
            nbytes = (weight + 7) // 8 + 4 * (params - weight) if bits == 1 else fbytes
        if bits == 1:
            binary_weights[name] = weight
        rows[name] = LayerSummary(name, type(module).__name__, _binary_input(module), bits, params, 0, fbytes, nbytes)

        def record(module, inputs, output, name=name):
            if isinstance(output, torch.Tensor) and rows[name].macs == 0:
                rows[name].macs = _macs(module, output)

        handles.append(module.register_forward_hook(record))
    try:
        param = next(model.parameters(), None)
        device = device or (param.device if param is not None else torch.device("cpu"))
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()

    in_rows = {id(t) for _, module in compute for t in list(module.parameters()) + list(module.buffers())}
    other_params = sum(p.numel() for p in model.parameters() if id(p) not in in_rows)
    other_buffers = sum(b.numel() for b in model.buffers() if id(b) not in in_rows and b.is_floating_point())
    all_params = other_params + sum(row.params for row in rows.values())
    n_binary = sum(binary_weights.values())
    params_by_bits = {32: all_params - n_binary, **({1: n_binary} if n_binary else {})}
    extra_bytes = 4 * (other_params + other_buffers)
    result = ModelSummary(
        list(rows.values()),
        params_by_bits,
        extra_bytes + sum(row.float_bytes for row in rows.values()),
        extra_bytes + sum(row.bytes for row in rows.values()),
    )
    if print_fn is not None:
        print_fn(str(result))
    return result
