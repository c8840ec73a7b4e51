"""Loader of the optional native kernel ``bnn.deploy._kernel`` (plain C, OpenMP).

``native()`` returns the extension module, or ``None`` when it was not built
(no compiler at install time) or was switched off with ``BNN_DISABLE_KERNEL=1``;
every packed layer then runs its pure-torch path, which gives the same numbers.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import torch

__all__ = ["native", "kernel_available", "available_isas", "set_isa", "get_isa", "conv_constants"]

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
    """Force one code path of the kernel (``"scalar"``, ``"avx2"``, ``"avx512"``); ``None`` picks the best."""
    if isa is None:
        _state["isa"] = -1
        return
    if isa not in available_isas():
        raise ValueError(f"bnn.deploy.set_isa: {isa!r} is not available on this CPU; available: {available_isas()}")
    _state["isa"] = _ISA_CODES[isa]


def get_isa() -> int:
    return _state["isa"]


def conv_constants(words: torch.Tensor, ints: Sequence[int], num_threads: Optional[int] = None) -> torch.Tensor:
    """The layer constants of one packed conv at one input geometry, for ``bconv(..., consts.data_ptr())``.

    ``ints`` are the integer kernel arguments of a :func:`bnn.deploy.functional.native_plan` (its ``ints``).
    The constants (tap offsets, pixel classes, the bias table ``Tv * Cg + 2 * popcount`` of the padded
    taps, and the nibble-split weights of the AVX2 tiles) depend only on the weight words and that
    geometry: computing them once per layer and input shape, instead of on every call, saves their
    cost at batch 1. They must be recomputed when the weight words change. The kernel checks that
    they were made for the geometry it is given.
    """
    mod = native()
    if mod is None:
        raise RuntimeError("bnn.deploy: the native kernel is not built (pip install -e . builds it)")
    if words.dtype != torch.int64 or not words.is_contiguous() or words.device.type != "cpu":
        raise ValueError("bnn.deploy.conv_constants: words must be a contiguous int64 CPU tensor")
    n = mod.bconv_constants(words.data_ptr(), 0, *ints, 1)
    consts = torch.empty(n, dtype=torch.int64)
    mod.bconv_constants(words.data_ptr(), consts.data_ptr(), *ints,
                        torch.get_num_threads() if num_threads is None else num_threads)
    return consts
