"""Binarization schedules: callbacks that switch binarizers, the LR drop and weight decay over training.

A callback is a :class:`Callback` (subclass it and override the hooks you need); the
:class:`~bnn.engine.Trainer` calls every hook of every callback in this order::

    on_train_begin(trainer)
    for epoch:  on_epoch_begin(trainer, epoch)
                for each optimizer step: on_step_begin(trainer, t)   # t = fractional epoch
                on_epoch_end(trainer, epoch, metrics)
    on_train_end(trainer, result)

and multiplies the learning rate by ``callback.lr_factor(t)`` and keeps weight
decay on only while every ``callback.weight_decay_enabled(epoch)`` is true.
``state_dict`` / ``load_state_dict`` go into the checkpoint, so a resumed run
continues exactly (the schedules below are pure functions of the epoch, so the
state is a record of what was applied).

Schedules:

1. :class:`StagedBinarizationSchedule` (NNCF binarization, Kozlov et al. 2020): activations binarized
   from epoch A, weights from epoch W (NNCF's LR drop and weight-decay stop are the ``poly`` LR schedule
   and ``OPTIMIZER.DISABLE_WD_EPOCH`` of the run's :class:`~bnn.engine.Config`).
2. :class:`TwoStageSchedule` (ReActNet's two-step training, Liu et al. 2020): stage 1
   binary activations and float weights, stage 2 both binary, started from the
   stage-1 checkpoint; :func:`bnn.engine.train` runs both (``SCHEDULE.NAME: two_stage``).
3. :class:`GradualBinarizationSchedule` (gradual binarization): ``bin_ratio`` and ``p`` of
   every ``GradualWeightBinarizer`` and ``ratio`` of every
   ``KBitActivationQuantizer`` ramped linearly from 0 to 1 per step.

:func:`build_callbacks` builds them from names (``"staged"``, ``"two_stage"``,
``"gradual"``); :func:`schedule_callbacks` from a config's ``SCHEDULE`` section (the Trainer does).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, List, Optional

import torch.nn as nn

from ..hints import did_you_mean
from ..ops import GradualWeightBinarizer, KBitActivationQuantizer
from ..switches import set_binarization

__all__ = [
    "Callback",
    "StagedBinarizationSchedule",
    "TwoStageSchedule",
    "GradualBinarizationSchedule",
    "CALLBACKS",
    "build_callback",
    "build_callbacks",
    "schedule_callbacks",
]


class Callback:
    """Base class of trainer callbacks: the Trainer calls every method below; each does nothing here."""

    def on_train_begin(self, trainer) -> None:
        pass

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        pass

    def on_step_begin(self, trainer, t: float) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, metrics: Dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer, result) -> None:
        pass

    def lr_factor(self, t: float) -> float:
        return 1.0

    def weight_decay_enabled(self, epoch: int) -> bool:
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


class StagedBinarizationSchedule(Callback):
    """The staged schedule of NNCF's binarization (Kozlov et al. 2020, "Neural Network Compression Framework").

    At the start of epoch ``e`` (0-based): activation binarizers enabled iff
    ``e >= activations_bin_start_epoch``, weight binarizers iff
    ``e >= weights_bin_start_epoch`` (``None``: left as they are).

    NNCF's learning-rate drop, weight-decay stop and gradient accumulation are settings of the run, each
    in one place of its :class:`~bnn.engine.Config`: ``LR_SCHEDULE: {NAME: poly, START_EPOCH, DURATION_EPOCHS}``,
    ``OPTIMIZER.DISABLE_WD_EPOCH``, ``TRAINING.BATCH_MULTIPLIER``. :func:`bnn.engine.steps.nncf_recipe` puts
    the ``bnn.NNCFSchedule`` of ``bnn.from_nncf_config`` there, this schedule (``SCHEDULE.STAGED``) included.
    """

    FIELDS = ("activations_bin_start_epoch", "weights_bin_start_epoch")
    #: former arguments -> where the setting lives now
    MOVED = {"lr_poly_drop_start_epoch": "LR_SCHEDULE: {NAME: poly, START_EPOCH: ...}",
             "lr_poly_drop_duration_epochs": "LR_SCHEDULE: {NAME: poly, DURATION_EPOCHS: ...}",
             "power": "LR_SCHEDULE: {NAME: poly, POWER: ...}",
             "disable_wd_start_epoch": "OPTIMIZER.DISABLE_WD_EPOCH",
             "batch_multiplier": "TRAINING.BATCH_MULTIPLIER"}

    def __init__(self, activations_bin_start_epoch: Optional[int] = None, weights_bin_start_epoch: Optional[int] = None,
                 **moved: Any) -> None:
        for key in moved:
            if key in self.MOVED:
                raise ValueError(f"staged schedule: {key!r} is a setting of the run now: {self.MOVED[key]} "
                                 "of the config (bnn.engine.steps.nncf_recipe converts an NNCFSchedule)")
            raise ValueError(f"staged schedule: unknown field {key!r}" + did_you_mean(key, self.FIELDS))
        self.activations_bin_start_epoch = activations_bin_start_epoch
        self.weights_bin_start_epoch = weights_bin_start_epoch
        self.applied: Dict[str, Any] = {}

    def activations_enabled(self, epoch: int) -> Optional[bool]:
        a = self.activations_bin_start_epoch
        return None if a is None else epoch >= a

    def weights_enabled(self, epoch: int) -> Optional[bool]:
        w = self.weights_bin_start_epoch
        return None if w is None else epoch >= w

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        acts, weights = self.activations_enabled(epoch), self.weights_enabled(epoch)
        set_binarization(trainer.model, activations=acts, weights=weights)
        self.applied = {"epoch": int(epoch), "activations": acts, "weights": weights}

    def state_dict(self) -> Dict[str, Any]:
        return {"applied": dict(self.applied)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.applied = dict(state.get("applied", {}))


class TwoStageSchedule(Callback):
    """ReActNet's two-step training (Liu et al. 2020), one stage per run.

    ``stage=1``: activation binarizers on, weight binarizers off (float weights);
    ``stage=2``: both on. Applied at the start of training and of every epoch.
    :func:`bnn.engine.train` with ``SCHEDULE.NAME: two_stage`` runs stage 1, then stage 2
    initialised from the stage-1 checkpoint (weight decay 1e-5, then 0 unless set).
    """

    def __init__(self, stage: int = 1) -> None:
        if int(stage) not in (1, 2):
            raise ValueError(f"two_stage schedule: stage must be 1 or 2, got {stage!r}")
        self.stage = int(stage)

    def _apply(self, trainer) -> None:
        set_binarization(trainer.model, activations=True, weights=self.stage == 2)

    def on_train_begin(self, trainer) -> None:
        self._apply(trainer)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self._apply(trainer)

    def state_dict(self) -> Dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "stage" in state and int(state["stage"]) != self.stage:
            raise ValueError(f"two_stage schedule: checkpoint is from stage {state['stage']}, this run is stage {self.stage}")


def _ramp(t: float, start: float, end: float) -> float:
    if end <= start:
        return 1.0 if t >= start else 0.0
    return min(max((t - start) / (end - start), 0.0), 1.0)


class GradualBinarizationSchedule(Callback):
    """Gradual binarization: weights (and int8 inputs) move from float to binary over training.

    Per optimizer step at fractional epoch ``t``:
    ``r_w = clip((t - start_epoch) / (end_epoch - start_epoch), 0, 1)`` is set as
    ``bin_ratio`` **and** ``p`` of every ``bnn.ops.GradualWeightBinarizer``
    (``w_used = (1 - r) w + r * mix_p(w, sign-binarized w)``) and
    ``r_a`` (same ramp over ``act_start_epoch .. act_end_epoch``, default the
    weights' ramp) as ``ratio`` of every ``bnn.ops.KBitActivationQuantizer``.
    ``end_epoch=None`` means the last epoch of the run. ``p_start_epoch`` /
    ``p_end_epoch`` give ``p`` its own ramp.
    """

    def __init__(self, start_epoch: float = 0.0, end_epoch: Optional[float] = None,
                 act_start_epoch: Optional[float] = None, act_end_epoch: Optional[float] = None,
                 p_start_epoch: Optional[float] = None, p_end_epoch: Optional[float] = None) -> None:
        self.start_epoch = float(start_epoch)
        self.end_epoch = None if end_epoch is None else float(end_epoch)
        self.act_start_epoch = act_start_epoch
        self.act_end_epoch = act_end_epoch
        self.p_start_epoch = p_start_epoch
        self.p_end_epoch = p_end_epoch
        self.values = {"bin_ratio": 0.0, "p": 0.0, "ratio": 0.0}

    def ratios(self, t: float, total_epochs: Optional[float] = None) -> Dict[str, float]:
        """The values ``{'bin_ratio', 'p', 'ratio'}`` at fractional epoch ``t``."""
        end = self.end_epoch if self.end_epoch is not None else float(total_epochs or 1)
        w = _ramp(t, self.start_epoch, end)
        a_start = self.start_epoch if self.act_start_epoch is None else float(self.act_start_epoch)
        a_end = end if self.act_end_epoch is None else float(self.act_end_epoch)
        p_start = self.start_epoch if self.p_start_epoch is None else float(self.p_start_epoch)
        p_end = end if self.p_end_epoch is None else float(self.p_end_epoch)
        return {"bin_ratio": w, "p": _ramp(t, p_start, p_end), "ratio": _ramp(t, a_start, a_end)}

    def apply(self, model: nn.Module, values: Dict[str, float]) -> int:
        """Write ``values`` into the model's gradual binarizers; returns how many modules were set."""
        n = 0
        for module in _unwrap(model).modules():
            if isinstance(module, GradualWeightBinarizer):
                module.bin_ratio = float(values["bin_ratio"])
                module.p = float(values["p"])
                n += 1
            elif isinstance(module, KBitActivationQuantizer):
                module.ratio = float(values["ratio"])
                n += 1
        self.values = dict(values)
        return n

    def on_train_begin(self, trainer) -> None:
        self._total = trainer.epochs
        self.apply(trainer.model, self.ratios(float(trainer.start_epoch), self._total))

    def on_step_begin(self, trainer, t: float) -> None:
        self.apply(trainer.model, self.ratios(t, trainer.epochs))

    def state_dict(self) -> Dict[str, Any]:
        return {"values": dict(self.values)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.values = dict(state.get("values", self.values))


CALLBACKS = {
    "staged": StagedBinarizationSchedule,
    "two_stage": TwoStageSchedule,
    "gradual": GradualBinarizationSchedule,
}


def build_callback(spec: Any) -> Callback:
    """A callback from ``{"name": NAME, **kwargs}`` (or ``"NAME"``, or an existing callback object).

    Names: ``staged``, ``two_stage``, ``gradual``. Errors name the culprit and the closest valid choice.
    """
    if isinstance(spec, Callback):
        return spec
    if not isinstance(spec, (str, dict)):
        raise TypeError(f"a callback must be a bnn.engine.Callback or a {{'name': ...}} spec, got {type(spec).__name__}")
    if isinstance(spec, str):
        spec = {"name": spec}
    kwargs = dict(spec)
    name = str(kwargs.pop("name", "")).lower()
    if name not in CALLBACKS:
        raise ValueError(f"unknown callback {name!r}" + did_you_mean(name, CALLBACKS))
    cls = CALLBACKS[name]
    signature = inspect.signature(cls.__init__).parameters
    params = [n for n, p in signature.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    checked = not any(p.kind is p.VAR_KEYWORD for p in signature.values())  # else the class names the culprit
    for key in kwargs:
        if checked and key not in params:
            raise ValueError(f"callback {name!r}: unknown argument {key!r}" + did_you_mean(key, params))
    return cls(**kwargs)


def build_callbacks(specs: Optional[Iterable[Any]]) -> List[Callback]:
    """:func:`build_callback` on each entry of ``specs`` (``None`` gives ``[]``)."""
    if specs is None:
        return []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    return [build_callback(s) for s in specs]


def schedule_callbacks(schedule) -> List[Callback]:
    """The callback of a config's ``SCHEDULE`` section (:class:`~bnn.engine.schema.ScheduleCfg`): ``staged`` and
    ``gradual`` (the section's fields are the callback's arguments, upper-cased); ``none`` and ``two_stage``
    (two runs, one callback each, see :func:`bnn.engine.train`) give none."""
    if schedule.NAME not in ("staged", "gradual"):
        return []
    section = schedule.STAGED if schedule.NAME == "staged" else schedule.GRADUAL
    return [build_callback({"name": schedule.NAME, **{key.lower(): value for key, value in vars(section).items()}})]
