"""Binarization schedules: callbacks that switch binarizers, the LR drop and weight decay over training.

A callback is any object with (some of) the hooks of :class:`Callback`; the
:class:`~bnn.engine.Trainer` calls them in this order::

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

1. :class:`StagedBinarizationSchedule` (seed 000, NNCF): activations binarized
   from epoch A, weights from epoch W, ``lr = base * ((P + D - t) / D) ** 2.1``
   from epoch P, weight decay 0 from epoch E. Accepts the ``bnn.NNCFSchedule``
   returned by ``bnn.from_nncf_config`` directly.
2. :class:`TwoStageSchedule` (seed 003; ReActNet, Liu et al. 2020): stage 1
   binary activations and float weights, stage 2 both binary, started from the
   stage-1 checkpoint; :func:`two_stage_configs` and :func:`train_two_stage`
   run both.
3. :class:`GradualBinarizationSchedule` (seed 004): ``bin_ratio`` and ``p`` of
   every ``GradualWeightBinarizer`` and ``ratio`` of every
   ``KBitActivationQuantizer`` ramped linearly from 0 to 1 per step.

:func:`build_callbacks` builds them from names (``"staged"``, ``"two_stage"``,
``"gradual"``).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch.nn as nn

from ..ops import Binarizer, GradualWeightBinarizer, KBitActivationQuantizer
from ..switches import set_binarization

__all__ = [
    "Callback",
    "StagedBinarizationSchedule",
    "TwoStageSchedule",
    "GradualBinarizationSchedule",
    "CALLBACKS",
    "build_callback",
    "build_callbacks",
    "two_stage_configs",
    "train_two_stage",
]


class Callback:
    """Base class of trainer callbacks; every hook is optional and does nothing here."""

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


def _binarizers_enabled(model: nn.Module, attr: str) -> List[bool]:
    out = []
    for module in _unwrap(model).modules():
        sub = getattr(module, attr, None)
        if isinstance(sub, Binarizer):
            out.append(bool(sub.enabled))
    return out


class StagedBinarizationSchedule(Callback):
    """Seed 000 (NNCF binarization) schedule.

    At the start of epoch ``e`` (0-based): activation binarizers enabled iff
    ``e >= activations_bin_start_epoch``, weight binarizers iff
    ``e >= weights_bin_start_epoch`` (``None``: left as they are); the learning
    rate factor at fractional epoch ``t`` is ``((P + D - t) / D) ** power`` for
    ``P <= t < P + D`` (``P = lr_poly_drop_start_epoch``,
    ``D = lr_poly_drop_duration_epochs``, ``power = 2.1``), 1 before, 0 after;
    weight decay is 0 from ``disable_wd_start_epoch`` on.

    ``StagedBinarizationSchedule(nncf_schedule)`` takes the ``bnn.NNCFSchedule``
    dataclass (or any object/dict with these field names) returned by
    ``bnn.from_nncf_config``; keyword arguments override its fields. Its
    ``batch_multiplier`` is used by the Trainer when the TrainConfig leaves
    ``batch_multiplier`` at 1.
    """

    FIELDS = (
        "activations_bin_start_epoch",
        "weights_bin_start_epoch",
        "lr_poly_drop_start_epoch",
        "lr_poly_drop_duration_epochs",
        "disable_wd_start_epoch",
        "batch_multiplier",
    )

    def __init__(self, schedule: Any = None, *, activations_bin_start_epoch: Optional[int] = None,
                 weights_bin_start_epoch: Optional[int] = None, lr_poly_drop_start_epoch: Optional[float] = None,
                 lr_poly_drop_duration_epochs: Optional[float] = None, disable_wd_start_epoch: Optional[int] = None,
                 batch_multiplier: Optional[int] = None, power: float = 2.1) -> None:
        values: Dict[str, Any] = {}
        if schedule is not None:
            if dataclasses.is_dataclass(schedule):
                src = dataclasses.asdict(schedule)
            elif isinstance(schedule, dict):
                src = dict(schedule)
            else:
                src = {k: getattr(schedule, k) for k in self.FIELDS if hasattr(schedule, k)}
            for key in src:
                if key not in self.FIELDS:
                    close = difflib.get_close_matches(key, self.FIELDS, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise ValueError(f"staged schedule: unknown field '{key}'{hint}")
            values.update(src)
        given = dict(activations_bin_start_epoch=activations_bin_start_epoch,
                     weights_bin_start_epoch=weights_bin_start_epoch,
                     lr_poly_drop_start_epoch=lr_poly_drop_start_epoch,
                     lr_poly_drop_duration_epochs=lr_poly_drop_duration_epochs,
                     disable_wd_start_epoch=disable_wd_start_epoch, batch_multiplier=batch_multiplier)
        values.update({k: v for k, v in given.items() if v is not None})
        self.activations_bin_start_epoch = values.get("activations_bin_start_epoch")
        self.weights_bin_start_epoch = values.get("weights_bin_start_epoch")
        self.lr_poly_drop_start_epoch = values.get("lr_poly_drop_start_epoch")
        self.lr_poly_drop_duration_epochs = values.get("lr_poly_drop_duration_epochs", 30)
        self.disable_wd_start_epoch = values.get("disable_wd_start_epoch")
        self.batch_multiplier = int(values.get("batch_multiplier") or 1)
        self.power = float(power)
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

    def lr_factor(self, t: float) -> float:
        if self.lr_poly_drop_start_epoch is None:
            return 1.0
        from .lr_schedule import poly_drop_factor

        return poly_drop_factor(t, self.lr_poly_drop_start_epoch, self.lr_poly_drop_duration_epochs, self.power)

    def weight_decay_enabled(self, epoch: int) -> bool:
        return self.disable_wd_start_epoch is None or epoch < self.disable_wd_start_epoch

    def state_dict(self) -> Dict[str, Any]:
        return {"applied": dict(self.applied)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.applied = dict(state.get("applied", {}))


class TwoStageSchedule(Callback):
    """Seed 003 / ReActNet two-step training, one stage per run.

    ``stage=1``: activation binarizers on, weight binarizers off (float weights);
    ``stage=2``: both on. Applied at the start of training and of every epoch.
    Use :func:`train_two_stage` to run stage 1, then stage 2 initialised from the
    stage-1 checkpoint (weight decay 1e-5, then 0, via :func:`two_stage_configs`).
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
    """Seed 004 gradual binarization.

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
        self._total = trainer.cfg.epochs
        self.apply(trainer.model, self.ratios(float(trainer.start_epoch), self._total))

    def on_step_begin(self, trainer, t: float) -> None:
        self.apply(trainer.model, self.ratios(t, trainer.cfg.epochs))

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
    if not isinstance(spec, (str, dict)):
        return spec  # already a callback
    if isinstance(spec, str):
        spec = {"name": spec}
    kwargs = dict(spec)
    name = str(kwargs.pop("name", "")).lower()
    if name not in CALLBACKS:
        close = difflib.get_close_matches(name, list(CALLBACKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown callback '{name}'{hint}; valid: {', '.join(CALLBACKS)}")
    cls = CALLBACKS[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "schedule")]
    for key in kwargs:
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"callback '{name}': unknown argument '{key}'{hint}")
    return cls(**kwargs)


def build_callbacks(specs: Optional[Iterable[Any]]) -> List[Callback]:
    """:func:`build_callback` on each entry of ``specs`` (``None`` gives ``[]``)."""
    if specs is None:
        return []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    return [build_callback(s) for s in specs]


def two_stage_configs(base, stage1: Optional[Dict[str, Any]] = None, stage2: Optional[Dict[str, Any]] = None):
    """``(cfg_stage1, cfg_stage2)`` from a base ``TrainConfig`` with seed 003's defaults.

    Stage 1: Adam, lr 1e-3, weight decay 1e-5, multistep x0.1 at epochs 40, 60, 70, 75 epochs.
    Stage 2: Adam, lr 2e-4, weight decay 0, multistep x0.2 at 150, 250, 320, 350 epochs.
    ``exp_dir`` becomes ``<base.exp_dir>/stage1`` and ``/stage2``; ``stage1`` / ``stage2`` dicts
    override any field.
    """
    s1 = dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=75, lr_schedule="multistep",
              lr_schedule_args={"milestones": [40, 60, 70], "gammas": [0.1, 0.1, 0.1]},
              exp_dir=os.path.join(base.exp_dir, "stage1"))
    s2 = dict(optimizer="adam", lr=2e-4, weight_decay=0.0, epochs=350, lr_schedule="multistep",
              lr_schedule_args={"milestones": [150, 250, 320], "gammas": [0.2, 0.2, 0.2]},
              exp_dir=os.path.join(base.exp_dir, "stage2"))
    s1.update(stage1 or {})
    s2.update(stage2 or {})
    base_cb = [c for c in base.callbacks if not (isinstance(c, dict) and c.get("name") == "two_stage")]
    cfg1 = base.replace(**s1, callbacks=base_cb + [{"name": "two_stage", "stage": 1}])
    cfg2 = base.replace(**s2, callbacks=base_cb + [{"name": "two_stage", "stage": 2}])
    return cfg1, cfg2


def train_two_stage(model: nn.Module, train_loader, val_loader, cfg_stage1, cfg_stage2, teacher: Optional[nn.Module] = None,
                    callbacks: Sequence[Any] = (), init_from: str = "last", **trainer_kwargs):
    """Run seed 003's two stages: stage 1 (binary activations, float weights), then stage 2 (all
    binary) starting from stage 1's ``last.pth`` (or ``best.pth`` with ``init_from="best"``).

    Each config must hold its ``two_stage`` callback (see :func:`two_stage_configs`) or one is added.
    A finished stage 1 (its ``last.pth`` at the final epoch) is not trained again, so the pair resumes.
    Returns ``(result_stage1, result_stage2)``.
    """
    from .checkpoint import load_checkpoint, load_model_state
    from .trainer import Trainer

    def with_stage(cfg, stage):
        if any(isinstance(c, dict) and c.get("name") == "two_stage" for c in cfg.callbacks):
            return cfg
        return cfg.replace(callbacks=list(cfg.callbacks) + [{"name": "two_stage", "stage": stage}])

    cfg1, cfg2 = with_stage(cfg_stage1, 1), with_stage(cfg_stage2, 2)
    t1 = Trainer(model, train_loader, val_loader, cfg1, callbacks=callbacks, teacher=teacher, **trainer_kwargs)
    done1 = False
    if os.path.exists(t1.last_path):
        done1 = int(load_checkpoint(t1.last_path, map_location="cpu").get("epoch", -1)) >= cfg1.epochs
    result1 = t1.fit(resume="auto") if not done1 else t1.load_result()
    t1.close()
    init_path = t1.best_path if init_from == "best" and os.path.exists(t1.best_path) else t1.last_path
    stage2_resuming = os.path.exists(os.path.join(cfg2.checkpoint_dir or cfg2.exp_dir, "last.pth"))
    if not stage2_resuming:
        load_model_state(_unwrap(model), init_path)
    t2 = Trainer(model, train_loader, val_loader, cfg2, callbacks=callbacks, teacher=teacher, **trainer_kwargs)
    result2 = t2.fit(resume="auto")
    t2.close()
    return result1, result2
