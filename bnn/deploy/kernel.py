"""Loader of the optional native kernel ``bnn.deploy._kernel`` (plain C, OpenMP).

``native()`` returns the extension module, or ``None`` when it was not built
(no compiler at install time) or was switched off with ``BNN_DISABLE_KERNEL=1``;
every packed layer then runs its pure-torch path, which gives the same numbers.
"""
from __future__ import annotations

import os
from typing import List, Optional

__all__ = ["native", "kernel_available", "available_isas", "set_isa", "get_isa"]

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
