"""Learning-rate schedules, evaluated per optimizer step at the fractional epoch.

Every schedule is a factor ``f(t)`` on the base learning rate of each param
group, with ``t = step / steps_per_epoch`` the fractional epoch (``t = 2.5`` is
half-way through the third epoch). :func:`build_lr_scheduler` wraps
``warmup(t) * schedule(t) * prod(callback.lr_factor(t))`` in a
``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimizer step, so its
``state_dict`` (the step count) is all that resume needs.

Schedules (the ``LR_SCHEDULE`` section of :class:`~bnn.engine.Config`; :func:`lr_schedule_args` gives the keyword
arguments of its schedule):

* ``constant``: ``f = 1``.
* ``multistep`` (the ReActNet/Bi-Real CIFAR recipes): ``f = prod(gamma_i for milestone_i <= t)``, args
  ``milestones`` and either ``gammas`` (one per milestone) or ``gamma``.
* ``cosine`` (Loshchilov & Hutter 2017): ``f = m + (1 - m) * (1 + cos(pi * t / T)) / 2``,
  ``T`` = ``total_epochs`` (default: the run's epochs), ``m`` = ``eta_min_factor``.
* ``linear`` (ReActNet): ``f = 1 - (1 - e) * t / T``, ``e`` = ``end_factor`` (default 0).
* ``poly`` (NNCF's binarization schedule, Kozlov et al. 2020): ``f = 1`` before ``start_epoch`` P, then
  ``((P + D - t) / D) ** power`` with ``D`` = ``duration_epochs``, ``power`` = 2.1,
  and 0 after ``P + D``.

Warmup (Goyal et al. 2017): for ``t < W`` the factor is multiplied by
``s + (1 - s) * t / W`` (``W`` = ``warmup_epochs``, ``s`` = ``warmup_start_factor``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import torch

from ..hints import did_you_mean

__all__ = [
    "LR_SCHEDULES",
    "constant_factor",
    "multistep_factor",
    "cosine_factor",
    "linear_factor",
    "poly_drop_factor",
    "warmup_factor",
    "make_lr_factor",
    "build_lr_scheduler",
    "lr_schedule_args",
]


def constant_factor(t: float) -> float:
    return 1.0


def multistep_factor(t: float, milestones: Sequence[float], gammas: Optional[Sequence[float]] = None, gamma: float = 0.1) -> float:
    """``prod(gammas[i] for milestones[i] <= t)`` (a step decay with one factor per milestone)."""
    milestones = list(milestones)
    if gammas is None:
        gammas = [gamma] * len(milestones)
    if len(gammas) != len(milestones):
        raise ValueError(f"multistep lr schedule: {len(milestones)} milestones but {len(gammas)} gammas; give one gamma per milestone")
    f = 1.0
    for m, g in sorted(zip(milestones, gammas)):
        if t >= m:
            f *= float(g)
    return f


def cosine_factor(t: float, total_epochs: float, eta_min_factor: float = 0.0) -> float:
    x = min(max(t / float(total_epochs), 0.0), 1.0) if total_epochs > 0 else 1.0
    return eta_min_factor + (1.0 - eta_min_factor) * 0.5 * (1.0 + math.cos(math.pi * x))


def linear_factor(t: float, total_epochs: float, end_factor: float = 0.0) -> float:
    x = min(max(t / float(total_epochs), 0.0), 1.0) if total_epochs > 0 else 1.0
    return 1.0 - (1.0 - end_factor) * x


def poly_drop_factor(t: float, start_epoch: float, duration_epochs: float, power: float = 2.1) -> float:
    """NNCF's drop: ``((start + duration - t) / duration) ** power`` from ``start`` on, 1 before, 0 after."""
    if t < start_epoch:
        return 1.0
    end = float(start_epoch) + float(duration_epochs)
    if t >= end or duration_epochs <= 0:
        return 0.0
    return ((end - t) / float(duration_epochs)) ** float(power)


def warmup_factor(t: float, warmup_epochs: float, start_factor: float = 0.0) -> float:
    if warmup_epochs <= 0 or t >= warmup_epochs:
        return 1.0
    return start_factor + (1.0 - start_factor) * t / float(warmup_epochs)


LR_SCHEDULES: Dict[str, Callable[..., float]] = {
    "constant": constant_factor,
    "multistep": multistep_factor,
    "cosine": cosine_factor,
    "linear": linear_factor,
    "poly": poly_drop_factor,
}


def make_lr_factor(name: str, args: Optional[dict] = None, total_epochs: Optional[float] = None,
                   warmup_epochs: float = 0.0, warmup_start_factor: float = 0.0) -> Callable[[float], float]:
    """``t -> warmup(t) * schedule(t)`` for the schedule called ``name`` with keyword ``args``."""
    key = str(name).lower()
    if key not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}" + did_you_mean(name, LR_SCHEDULES))
    kwargs = dict(args or {})
    if key in ("cosine", "linear") and "total_epochs" not in kwargs:
        if total_epochs is None:
            raise ValueError(f"lr_schedule '{key}' needs total_epochs")
        kwargs["total_epochs"] = total_epochs
    fn = LR_SCHEDULES[key]
    try:
        fn(0.0, **kwargs)  # validates the argument names and values now, not mid-run
    except TypeError as exc:
        raise ValueError(f"lr_schedule '{key}': bad lr_schedule_args {sorted(kwargs)} ({exc})") from None

    def factor(t: float) -> float:
        return warmup_factor(t, warmup_epochs, warmup_start_factor) * fn(t, **kwargs)

    return factor


def lr_schedule_args(lrs) -> Dict[str, Any]:
    """The keyword arguments of :func:`make_lr_factor` for an ``LR_SCHEDULE`` section."""
    name = lrs.NAME
    if name == "multistep":
        return {"milestones": list(lrs.MILESTONES), **({"gammas": list(lrs.GAMMAS)} if lrs.GAMMAS else {"gamma": lrs.GAMMA})}
    if name == "poly":
        return {"start_epoch": lrs.START_EPOCH or 0.0, "duration_epochs": lrs.DURATION_EPOCHS, "power": lrs.POWER}
    if name not in ("cosine", "linear"):
        return {}
    args: Dict[str, Any] = {"eta_min_factor": lrs.ETA_MIN_FACTOR} if name == "cosine" else {"end_factor": lrs.END_FACTOR}
    if lrs.TOTAL_EPOCHS is not None:
        args["total_epochs"] = lrs.TOTAL_EPOCHS
    return args


def build_lr_scheduler(optimizer: torch.optim.Optimizer, lrs, epochs: float, steps_per_epoch: int,
                       extra_factors: Iterable[Callable[[float], float]] = ()) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step: ``lr = base * factor(step / steps_per_epoch)``, the factor
    of the ``LR_SCHEDULE`` section ``lrs`` over a run of ``epochs`` epochs.

    ``extra_factors`` (callbacks' :meth:`~bnn.engine.Callback.lr_factor`) multiply the factor.
    """
    base = make_lr_factor(lrs.NAME, lr_schedule_args(lrs), total_epochs=epochs,
                          warmup_epochs=lrs.WARMUP_EPOCHS, warmup_start_factor=lrs.WARMUP_START_FACTOR)
    extras = list(extra_factors)
    spe = max(int(steps_per_epoch), 1)

    def lam(step: int) -> float:
        t = step / spe
        f = base(t)
        for extra in extras:
            f *= extra(t)
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lam)
