"""One helper for the "did you mean" hints of every error message in ``bnn``."""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

__all__ = ["closest", "did_you_mean"]


def closest(word: str, choices: Iterable[str], cutoff: float = 0.5) -> Optional[str]:
    """The choice closest to ``word`` (case-insensitive, ``difflib``), or ``None`` when none is close."""
    by_lower = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str], *, list_all: bool = True, cutoff: float = 0.5) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice; else ``" (valid: a, b, c)"`` (or ``""``).

    Append it to a one-line error message: ``raise ValueError(f"unknown optimizer {name!r}" + did_you_mean(name, names))``.
    """
    choices = [str(c) for c in choices]
    near = closest(word, choices, cutoff=cutoff)
    if near is not None:
        return f" (did you mean {near!r}?)"
    if list_all and choices:
        return f" (valid: {', '.join(sorted(choices))})"
    return ""
