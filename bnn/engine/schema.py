"""The typed schema of the env / recipe YAML files read by ``bnn-train`` and ``recipes/run_dev.py``.

A config is layered, later layers winning::

    schema defaults (the one set: the Trainer reads its settings from the same sections)
      < the recipe file (``--config PATH``)
      < the user env file (``-u USER`` -> ``configs/env_USER.yaml``)
      < ``KEY=VALUE`` overrides on the command line (dotted paths, ``TRAINING.EPOCHS=3``)

Every layer is validated on its own when it is read, so an unknown key or a
wrong type is reported as ONE line naming the file, the dotted key path and the
closest valid key (:func:`bnn.hints.closest`)::

    configs/env_dima.yaml: unknown key 'TRAINING.EPOCH' (did you mean 'TRAINING.EPOCHS'?)
    configs/env_dima.yaml: TRAINING.EPOCHS must be an int, got str 'ten'

Section and field names are matched case-insensitively and stored upper case
(``BCONFIG.activation_pre_process`` is ``BCONFIG.ACTIVATION_PRE_PROCESS``).
Sections (dataclasses) merge key by key across layers; every other value
(lists, free ``KWARGS`` dicts, binarizer specs) is replaced as a whole.

Binarizers are named by their class in :mod:`bnn.ops`, in any of the forms::

    ACTIVATION_PRE_PROCESS: BasicInputBinarizer
    WEIGHT_PRE_PROCESS: {name: XNORWeightBinarizer, center_weights: true}
    WEIGHT_PRE_PROCESS: {XNORWeightBinarizer: {center_weights: true}}
    ACTIVATION_POST_PROCESS: null          # identity

and are resolved through the binarizer registry (:func:`bnn.ops.get_binarizer`; a class registered with
:func:`bnn.ops.register_binarizer` works by name), name and keyword arguments checked against the class
at load time. ``BCONFIG: {PRESET: reactnet}`` takes a named preset of :mod:`bnn.presets`.

Why not OmegaConf structured configs: tried (2.4) on this schema, they merge and type-check, but their
errors are four lines without the file name, an unknown section gets no hint, keys are case-sensitive and
``Literal`` fields are rejected; keeping today's one-line errors would mean catching and rewriting every
one of them, so the validation here stays plain Python over the dataclasses.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Union

import yaml

from ..hints import closest, did_you_mean

# the sections (``TrainingCfg``, ``OptimizerCfg``, ...) are importable by name for type annotations; a config
# is built as a whole (``Config.from_dict``, ``load_config``), so they are not part of the star-import surface
__all__ = ["Config", "ConfigError", "load_config", "load_run_config", "config_to_dict", "config_from_record",
           "config_diff", "build_bconfig", "load_nncf_json"]


class ConfigError(ValueError):
    """A bad config: the message is one line naming the file, the key path and the closest valid choice."""


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------
#: A binarizer as written in YAML: a class name in :mod:`bnn.ops`, ``{name: Cls, **args}``,
#: ``{Cls: {args}}`` or ``null`` (identity). Canonical form after validation: ``{"name": str, "args": dict}`` or None.
BinarizerSpec = Optional[Union[str, Dict[str, Any]]]


def _section(cls: type, **values: Any):
    """The default of a nested section: a fresh ``cls(**values)`` per config."""
    return field(default_factory=lambda: cls(**values))


@dataclass
class ProjectCfg:
    """``PROJECT.ROOT``: the base of relative ``DATA.ROOT`` / ``EXPERIMENT.DIR`` / checkpoint paths."""

    ROOT: str = "."


@dataclass
class HardwareCfg:
    """``HARDWARE.WORKERS``: data-loader worker processes; ``DEVICE``: auto (CUDA when available), cpu, cuda, cuda:N."""

    WORKERS: int = 2
    DEVICE: str = "auto"
    GPU: Optional[int] = None
    DIST_BACKEND: Optional[str] = None


@dataclass
class TrainingCfg:
    """Epochs, batch sizes and the knobs of the training loop.

    ``BATCH_MULTIPLIER``: gradients accumulated over this many batches per optimizer
    step (NNCF's ``batch_multiplier``). ``AMP``: mixed precision, used on CUDA only.
    """

    EPOCHS: int = 3
    BATCH_SIZE: int = 64
    EVAL_BATCH_SIZE: Optional[int] = None
    BATCH_MULTIPLIER: int = 1
    AMP: bool = True
    SEED: int = 0
    LABEL_SMOOTHING: float = 0.0
    AMP_DTYPE: Literal["float16", "bfloat16"] = "float16"
    GRAD_CLIP: Optional[float] = None
    LOG_INTERVAL: int = 20
    MAX_STEPS_PER_EPOCH: Optional[int] = None


@dataclass
class ExperimentCfg:
    """``EXPERIMENT.DIR``: where runs go; a run writes to ``DIR/NAME`` (NAME defaults to the recipe file stem)."""

    DIR: str = "experiments"
    NAME: Optional[str] = None
    TENSORBOARD: bool = True
    PLOT: bool = True
    PROGRESS_BAR: bool = True


@dataclass
class DataCfg:
    """The data set (:func:`bnn.data.build_datasets`): ``synthetic`` (embedded shapes, no download),
    ``cifar10``, ``cifar100``, ``mnist``, ``imagenet`` or ``imagefolder``.

    ``ROOT``: its directory (relative to ``PROJECT.ROOT``; default ``data/<name>``); ``DOWNLOAD``:
    let torchvision fetch CIFAR / MNIST. ``TRAIN_SIZE`` / ``VAL_SIZE``: the synthetic set's sizes,
    or the first N samples of the others (quick checks). ``SEED``: the synthetic set's seed.
    ``KWARGS``: more arguments of ``build_datasets`` (``image_size``, ``num_classes``, ``augment``).
    """

    NAME: str = "synthetic"
    ROOT: Optional[str] = None
    DOWNLOAD: bool = False
    TRAIN_SIZE: Optional[int] = None
    VAL_SIZE: Optional[int] = None
    SEED: int = 0
    KWARGS: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCfg:
    """A model of :mod:`bnn.models` by name with keyword arguments.

    ``CHECKPOINT``: float or binary weights loaded before training (a pretrained float
    model, or the previous stage of a two-stage recipe). ``FLOAT_LAYERS``: layer names
    kept full precision, added to ``BCONFIG.IGNORE``; ``null`` = the model's own
    :func:`bnn.models.float_layer_names` (first conv, classifier and, with
    ``FLOAT_DOWNSAMPLE``, the downsample shortcut convs); ``[]`` = none.
    """

    NAME: str = "resnet18"
    KWARGS: Dict[str, Any] = field(default_factory=dict)
    CHECKPOINT: Optional[str] = None
    FLOAT_LAYERS: Optional[List[str]] = None
    FLOAT_DOWNSAMPLE: bool = True


@dataclass
class LayerBConfigCfg:
    """The BConfig of the layers one ``BCONFIG.OVERRIDES`` entry names (fields not given: identity)."""

    ACTIVATION_PRE_PROCESS: BinarizerSpec = None
    ACTIVATION_POST_PROCESS: BinarizerSpec = None
    WEIGHT_PRE_PROCESS: BinarizerSpec = None


@dataclass
class BConfigCfg:
    """The :class:`bnn.BConfig` by binarizer names, plus the ignore list and per-layer overrides.

    ``PRESET``: a named preset of :mod:`bnn.presets` (``bnn.presets.preset_names()``: ``xnor_net``, ``reactnet``, ...)
    filling the three binarizers; binarizer keys given next to it override it.
    ``IGNORE``: layer names, ``"$regex$"``, ``"_first_"``, ``"_last_"`` kept float.
    ``OVERRIDES``: layer name or ``"$regex$"`` -> a BConfig of its own (fields not given are identity;
    ``{}`` keeps the layer float).
    """

    PRESET: Optional[str] = None
    ACTIVATION_PRE_PROCESS: BinarizerSpec = None
    ACTIVATION_POST_PROCESS: BinarizerSpec = None
    WEIGHT_PRE_PROCESS: BinarizerSpec = None
    IGNORE: List[str] = field(default_factory=list)
    OVERRIDES: Dict[str, LayerBConfigCfg] = field(default_factory=dict)


@dataclass
class ParamGroupCfg:
    """Weight decay (None: ``OPTIMIZER.WEIGHT_DECAY``) and learning-rate factor of one parameter group."""

    WEIGHT_DECAY: Optional[float] = None
    LR_MULT: float = 1.0


@dataclass
class OptimizerCfg:
    """Adam / AdamW / SGD with parameter groups (:mod:`bnn.engine.optim`).

    Groups: ``LATENT_WEIGHTS`` (float weights behind a weight binarizer), ``BINARIZER`` (the
    binarizers' own parameters), ``BN_BIAS`` (normalization affine and biases), ``REST``.
    Latent binary weights, binarizer parameters, BN and biases get no weight decay by default
    (as in ReActNet and NNCF's binarization recipes). ``DISABLE_WD_EPOCH``: weight decay is 0 for every group from this epoch on.
    """

    NAME: Literal["adam", "adamw", "sgd"] = "adam"
    LR: float = 1e-3
    WEIGHT_DECAY: float = 1e-5
    MOMENTUM: float = 0.9
    NESTEROV: bool = False
    BETAS: List[float] = field(default_factory=lambda: [0.9, 0.999])
    EPS: float = 1e-8
    LATENT_WEIGHTS: ParamGroupCfg = _section(ParamGroupCfg, WEIGHT_DECAY=0.0)
    BINARIZER: ParamGroupCfg = _section(ParamGroupCfg, WEIGHT_DECAY=0.0)
    BN_BIAS: ParamGroupCfg = _section(ParamGroupCfg, WEIGHT_DECAY=0.0)
    REST: ParamGroupCfg = _section(ParamGroupCfg)
    DISABLE_WD_EPOCH: Optional[int] = None


@dataclass
class LRScheduleCfg:
    """Learning-rate schedule, a factor on the base LR evaluated per optimizer step at the fractional epoch t
    (:mod:`bnn.engine.lr_schedule`).

    ``constant``; ``multistep``: ``prod(GAMMAS[i] for MILESTONES[i] <= t)`` (or ``GAMMA`` for all);
    ``cosine``: ``m + (1 - m) * (1 + cos(pi t / T)) / 2`` with ``m = ETA_MIN_FACTOR``;
    ``linear`` (ReActNet): ``1 - (1 - END_FACTOR) t / T``; ``poly`` (NNCF's drop):
    ``((START_EPOCH + DURATION_EPOCHS - t) / DURATION_EPOCHS) ** POWER`` from ``START_EPOCH``.
    ``T``: ``TOTAL_EPOCHS`` or the run's epochs. ``WARMUP_EPOCHS``: linear warmup from ``WARMUP_START_FACTOR``.
    """

    NAME: Literal["constant", "multistep", "cosine", "linear", "poly"] = "cosine"
    MILESTONES: List[float] = field(default_factory=list)
    GAMMAS: List[float] = field(default_factory=list)
    GAMMA: float = 0.1
    ETA_MIN_FACTOR: float = 0.0
    END_FACTOR: float = 0.0
    START_EPOCH: Optional[float] = None
    DURATION_EPOCHS: Optional[float] = None
    POWER: float = 2.1
    TOTAL_EPOCHS: Optional[float] = None
    WARMUP_EPOCHS: float = 0.0
    WARMUP_START_FACTOR: float = 0.0


@dataclass
class DistillationCfg:
    """Knowledge distillation from a frozen float teacher (ReActNet's KL on logits, also used by NNCF's binarization recipe).

    ``TEACHER``: ``null`` / ``same`` = a copy of the float model before binarization (with
    ``MODEL.CHECKPOINT`` loaded; in a multi-step recipe, as trained by the last float step, one that
    binarizes nothing, before the distilling step), or a model name of :mod:`bnn.models` with ``TEACHER_KWARGS``.
    ``TEACHER_CHECKPOINT``: its weights. loss = ``ALPHA * T^2 * KL(teacher || student) + (1 - ALPHA) * CE``.
    """

    ENABLED: bool = False
    TEACHER: Optional[str] = None
    TEACHER_KWARGS: Dict[str, Any] = field(default_factory=dict)
    TEACHER_CHECKPOINT: Optional[str] = None
    TEMPERATURE: float = 1.0
    ALPHA: float = 1.0


@dataclass
class StagedCfg:
    """NNCF's staged binarization (Kozlov et al. 2020; epochs counted from 0): float, then binary
    activations from epoch ``ACTIVATIONS_BIN_START_EPOCH``, binary weights from ``WEIGHTS_BIN_START_EPOCH``.
    NNCF's LR drop is ``LR_SCHEDULE: {NAME: poly, START_EPOCH, DURATION_EPOCHS}`` and its weight-decay stop
    ``OPTIMIZER.DISABLE_WD_EPOCH``; the old spellings ``STAGED.LR_POLY_DROP_START_EPOCH`` /
    ``LR_POLY_DROP_DURATION_EPOCHS`` / ``POWER`` / ``DISABLE_WD_START_EPOCH`` are read as those keys.
    With ``NNCF_CONFIG`` all of these come from the NNCF JSON's ``params`` instead."""

    ACTIVATIONS_BIN_START_EPOCH: Optional[int] = 1
    WEIGHTS_BIN_START_EPOCH: Optional[int] = 2


@dataclass
class StageCfg:
    """One stage of the two-stage schedule: epochs and what replaces the top-level OPTIMIZER /
    LR_SCHEDULE / DISTILLATION keys for it (keys not given are inherited)."""

    EPOCHS: int = 1
    OPTIMIZER: OptimizerCfg = _section(OptimizerCfg)
    LR_SCHEDULE: LRScheduleCfg = _section(LRScheduleCfg)
    DISTILLATION: DistillationCfg = _section(DistillationCfg)


@dataclass
class TwoStageCfg:
    """ReActNet's two-step training (Liu et al. 2020): stage 1 binary activations with float weights (weight decay 1e-5 unless
    set), then stage 2 all binary, started from stage 1's checkpoint (weight decay 0 unless set).
    The model is prepared once with ``BCONFIG``; stage 1 switches the weight binarizers off.
    ``INIT_FROM``: stage 2 starts from stage 1's ``last`` or ``best`` checkpoint.
    """

    STAGE1: StageCfg = _section(StageCfg)
    STAGE2: StageCfg = _section(StageCfg, OPTIMIZER=OptimizerCfg(WEIGHT_DECAY=0.0))
    INIT_FROM: Literal["last", "best"] = "last"


@dataclass
class GradualCfg:
    """Gradual binarization: ``bin_ratio`` and ``p`` of every GradualWeightBinarizer ramp linearly from 0 at
    ``START_EPOCH`` to 1 at ``END_EPOCH`` (null: the end of the run), per optimizer step; the
    ``ratio`` of every KBitActivationQuantizer (int8 inputs) ramps over ``ACT_START_EPOCH`` ..
    ``ACT_END_EPOCH`` and ``p`` over ``P_START_EPOCH`` .. ``P_END_EPOCH`` (null: the weights' ramp)."""

    START_EPOCH: float = 0.0
    END_EPOCH: Optional[float] = None
    ACT_START_EPOCH: Optional[float] = None
    ACT_END_EPOCH: Optional[float] = None
    P_START_EPOCH: Optional[float] = None
    P_END_EPOCH: Optional[float] = None


@dataclass
class ScheduleCfg:
    """The binarization schedule: ``none`` (binary from the start), ``staged``, ``two_stage`` or ``gradual``."""

    NAME: Literal["none", "staged", "two_stage", "gradual"] = "none"
    STAGED: StagedCfg = _section(StagedCfg)
    TWO_STAGE: TwoStageCfg = _section(TwoStageCfg)
    GRADUAL: GradualCfg = _section(GradualCfg)


@dataclass
class StepCfg(StageCfg):
    """One step of a multi-step recipe, a stage with a name and a BConfig: train ``EPOCHS`` epochs with this
    BConfig, then go on to the next step keeping every learned parameter (``prepare_binary_model`` is re-run
    on the already prepared model). ``BCONFIG`` is inherited key by key like the stage's sections.
    """

    NAME: Optional[str] = None
    BCONFIG: BConfigCfg = _section(BConfigCfg)


@dataclass
class Config:
    """A whole run: the nested sections the YAML fills. ``bnn-train`` without ``--config`` reads the quick
    start recipe (``bnn/configs/quickstart.yaml``) on top of these defaults."""

    PROJECT: ProjectCfg = _section(ProjectCfg)
    HARDWARE: HardwareCfg = _section(HardwareCfg)
    TRAINING: TrainingCfg = _section(TrainingCfg)
    EXPERIMENT: ExperimentCfg = _section(ExperimentCfg)
    DATA: DataCfg = _section(DataCfg)
    MODEL: ModelCfg = _section(ModelCfg)
    BCONFIG: BConfigCfg = _section(BConfigCfg)
    OPTIMIZER: OptimizerCfg = _section(OptimizerCfg)
    LR_SCHEDULE: LRScheduleCfg = _section(LRScheduleCfg)
    SCHEDULE: ScheduleCfg = _section(ScheduleCfg)
    DISTILLATION: DistillationCfg = _section(DistillationCfg)
    STEPS: List[StepCfg] = field(default_factory=list)
    NNCF_CONFIG: Optional[str] = None

    # ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Dict[str, Any], overrides=()) -> "Config":
        """A config from nested mappings, validated as a YAML file is (same keys, any case; same one-line
        errors, with ``Config.from_dict`` in place of the file name); ``overrides``: ``KEY=VALUE`` strings::

            Config.from_dict({"TRAINING": {"EPOCHS": 30}, "OPTIMIZER": {"LR": 3e-3, "WEIGHT_DECAY": 1e-5}})
        """
        return _build([("Config.from_dict", data)], overrides)

    def replace(self, *overrides: str, **sections: Dict[str, Any]) -> "Config":
        """A validated copy with ``KEY=VALUE`` overrides (as on the ``bnn-train`` command line) and section
        mappings merged key by key: ``cfg.replace("TRAINING.EPOCHS=3", OPTIMIZER={"LR": 3e-3})``. A step or
        two-stage stage follows a changed top-level key where it held the top-level value (a value of its own
        stays)."""
        return _build([("config", _unfinish_steps(config_to_dict(self))), ("Config.replace", sections)], overrides)

    def run_dir(self) -> str:
        """``EXPERIMENT.DIR/EXPERIMENT.NAME`` (NAME ``default`` when unset) taken from ``PROJECT.ROOT``: where
        the run writes."""
        return self.resolve_path(os.path.join(self.EXPERIMENT.DIR, self.EXPERIMENT.NAME or "default"))

    def resolve_path(self, path: Optional[str]) -> Optional[str]:
        """``path`` with ``~`` expanded and, when relative, taken from ``PROJECT.ROOT``."""
        if path is None:
            return None
        path = os.path.expanduser(str(path))
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(os.path.expanduser(self.PROJECT.ROOT), path))

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run (summed over ``STEPS`` or the two stages)."""
        if self.STEPS:
            return sum(s.EPOCHS for s in self.STEPS)
        if self.SCHEDULE.NAME == "two_stage":
            return self.SCHEDULE.TWO_STAGE.STAGE1.EPOCHS + self.SCHEDULE.TWO_STAGE.STAGE2.EPOCHS
        return self.TRAINING.EPOCHS


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
_NONE = type(None)
_HINTS: Dict[type, Dict[str, Any]] = {}
# sections of a step that inherit, key by key, from the top-level section of the same name
_STEP_INHERITED = ("BCONFIG", "OPTIMIZER", "LR_SCHEDULE", "DISTILLATION")
_BCONFIG_FIELDS = ("ACTIVATION_PRE_PROCESS", "ACTIVATION_POST_PROCESS", "WEIGHT_PRE_PROCESS")


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(cls: type) -> Dict[str, Any]:
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _key_of(keys, wanted: Any, default: Any = None) -> Any:
    """The key of ``keys`` that is ``wanted`` up to case (keys are matched case-insensitively everywhere)."""
    return next((k for k in keys if str(k).upper() == str(wanted).upper()), default)


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is _NONE:
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Union:
        args = typing.get_args(tp)
        if args == typing.get_args(BinarizerSpec):
            return "a binarizer (class name in bnn.ops, {name: ..., args}, or null)"
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict):
        return "a mapping"
    return {int: "an int", float: "a number", bool: "a bool (true/false)", str: "a string"}.get(tp, str(tp))


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _fail(src: str, msg: str) -> ConfigError:
    return ConfigError(f"{src}: {msg}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expect(ok: bool, value: Any) -> Any:
    if not ok:
        raise TypeError(value)
    return value


#: scalar type -> its conversion (TypeError / ValueError: not a value of the type); YAML 1.1 reads ``1e-3``
#: (no dot) as a string, so a number may be a numeric string; an int may be an integral float
_SCALARS = {
    bool: lambda v: _expect(isinstance(v, bool), v),
    int: lambda v: int(_expect(_number(v) and float(v).is_integer(), v)),
    float: lambda v: float(_expect(_number(v) or isinstance(v, str), v)),
    str: lambda v: str(_expect(_number(v) or isinstance(v, str), v)),
}


def _check(tp: Any, value: Any, path: str, src: str) -> Any:
    """Validate ``value`` against the type ``tp``; return canonical plain data (dicts with canonical keys)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(src, f"{path or 'the file'} must be a mapping of keys, got {_got(value)}")
        return _check_section(tp, value, path, src)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None:
            if _NONE in args:
                return None
            raise _fail(src, f"{path} must be {_type_name(tp)}, got null")
        if args == typing.get_args(BinarizerSpec):
            return _check_binarizer(value, path, src)
        errors = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return _check(arg, value, path, src)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(src, f"{path} must be {_type_name(tp)}, got {_got(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str):
            for choice in choices:
                if value.lower() == str(choice).lower():
                    return choice
        hint = did_you_mean(str(value), [str(c) for c in choices], list_all=False)
        raise _fail(src, f"{path} must be one of {', '.join(map(str, choices))}, got {value!r}{hint}")
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _fail(src, f"{path} must be a list, got {_got(value)}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_check(item_tp, v, _join(path, i), src) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise _fail(src, f"{path} must be a mapping, got {_got(value)}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _check(val_tp, v, _join(path, str(k)), src) for k, v in value.items()}
    if tp in _SCALARS:
        try:
            return _SCALARS[tp](value)
        except (TypeError, ValueError):
            raise _fail(src, f"{path} must be {_type_name(tp)}, got {_got(value)}") from None
    raise TypeError(f"schema type {tp!r} at {path} is not supported")  # pragma: no cover - schema bug


def _unknown_key(src: str, path: str, key: str, fields) -> ConfigError:
    """``src: unknown key 'PATH.KEY' (did you mean 'PATH.NEAR'?)``, the hint through :func:`bnn.hints.closest`."""
    near = closest(key, fields)
    hint = f" (did you mean {_join(path, near)!r}?)" if near else f" (valid keys: {', '.join(fields)})"
    return _fail(src, f"unknown key {_join(path, key)!r}{hint}")


def _check_section(cls: type, raw: dict, path: str, src: str) -> dict:
    fields = _fields(cls)
    out: dict = {}
    for key, value in raw.items():
        name = _key_of(fields, key)
        if name is None:
            raise _unknown_key(src, path, str(key), fields)
        out[name] = _check(fields[name], value, _join(path, name), src)
    _cross_check(cls, out, path, src)
    return out


def _cross_check(cls: type, data: dict, path: str, src: str) -> None:
    """Checks spanning several keys of one section (on the keys present in this layer)."""
    if cls is LRScheduleCfg and "MILESTONES" in data and "GAMMAS" in data:
        if data["GAMMAS"] and len(data["GAMMAS"]) != len(data["MILESTONES"]):
            raise _fail(
                src,
                f"{_join(path, 'GAMMAS')} has {len(data['GAMMAS'])} values but {_join(path, 'MILESTONES')} "
                f"has {len(data['MILESTONES'])}: give one gamma per milestone (or one list of [] to use 0.1)",
            )
    if cls is OptimizerCfg and "BETAS" in data and len(data["BETAS"]) != 2:
        raise _fail(src, f"{_join(path, 'BETAS')} must be a list of two numbers, got {data['BETAS']!r}")


# ---- binarizers ------------------------------------------------------------------------------
def binarizer_names() -> Dict[str, type]:
    """Every registered binarizer (:func:`bnn.ops.register_binarizer`), by name."""
    from ..ops import registered_binarizers

    return registered_binarizers()


def _check_binarizer(value: Any, path: str, src: str) -> Optional[dict]:
    if isinstance(value, str):
        if value.lower() in ("none", "identity", "null", "float"):
            return None
        name, args = value, {}
    elif isinstance(value, dict):
        lowered = {str(k).lower(): k for k in value}
        if "name" in lowered:
            args = {k: v for k, v in value.items() if k != lowered["name"]}
            name = value[lowered["name"]]
            if isinstance(args.get("args"), dict) and len(args) == 1:
                args = dict(args["args"])
        elif len(value) == 1:
            ((name, args),) = value.items()
            args = {} if args is None else args
            if not isinstance(args, dict):
                raise _fail(src, f"{_join(path, name)} must be a mapping of keyword arguments, got {_got(args)}")
        else:
            raise _fail(
                src, f"{path} must name one binarizer: {{name: Cls, arg: value}} or {{Cls: {{arg: value}}}}, got keys {list(value)}"
            )
        if not isinstance(name, str):
            raise _fail(src, f"{path} name must be a class name string, got {_got(name)}")
    else:
        raise _fail(src, f"{path} must be {_type_name(BinarizerSpec)}, got {_got(value)}")
    name, cls = _lookup_binarizer(name, path, src)
    _check_args(cls, args, path, src)
    return {"name": name, "args": dict(args)}


def _lookup_binarizer(name: str, path: str, src: str):
    """``(registered name, class)`` of a binarizer name (case-insensitive), through :func:`bnn.ops.get_binarizer`'s registry."""
    known = binarizer_names()
    if name in known:
        return name, known[name]
    for known_name, cls in known.items():  # case-insensitive fallback
        if known_name.lower() == name.lower():
            return known_name, cls
    raise _fail(src, f"{path}: unknown binarizer {name!r} (register your own with bnn.ops.register_binarizer)"
                + did_you_mean(name, known))


def _check_args(cls: type, args: dict, path: str, src: str) -> None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    optional = [n for n in names if params[n].default is not inspect.Parameter.empty]
    for arg in args:
        if arg not in optional:
            hint = did_you_mean(str(arg), optional) if optional else " (it takes none)"
            raise _fail(src, f"{_join(path, cls.__name__)}: unknown argument {arg!r}{hint}")


def resolve_binarizer(spec: Optional[dict]):
    """The factory for a canonical binarizer spec (``None`` -> ``None``, identity)."""
    if spec is None:
        return None
    cls = _lookup_binarizer(spec["name"], "binarizer", "config")[1]
    args = spec.get("args") or {}
    if not args:
        return cls
    if hasattr(cls, "with_args"):
        return cls.with_args(**args)
    from ..config import Factory

    return Factory(cls, **args)


def build_bconfig(cfg: BConfigCfg, float_layers=()) -> dict:
    """Keyword arguments of :func:`bnn.prepare_binary_model` for a validated ``BCONFIG`` section:
    ``{"bconfig", "custom_config_layers_name", "ignore_layers_name"}``."""
    from ..config import BConfig

    def make(section) -> BConfig:
        return BConfig(
            activation_pre_process=resolve_binarizer(section.ACTIVATION_PRE_PROCESS),
            activation_post_process=resolve_binarizer(section.ACTIVATION_POST_PROCESS),
            weight_pre_process=resolve_binarizer(section.WEIGHT_PRE_PROCESS),
        )

    ignore = list(dict.fromkeys(list(cfg.IGNORE) + list(float_layers)))
    custom = {name: make(over) for name, over in cfg.OVERRIDES.items()}
    return {
        "bconfig": make(cfg),
        "custom_config_layers_name": custom or None,
        "ignore_layers_name": ignore or None,
    }


# --------------------------------------------------------------------------------------------
# Loading, merging, overrides
# --------------------------------------------------------------------------------------------
def load_yaml(path: str) -> dict:
    """Read one YAML file; a missing file or a YAML syntax error is one line naming the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (PROJECT, TRAINING, ...), got {type(data).__name__}")
    return data


def _merge(cls: type, base: dict, layer: dict) -> dict:
    """Deep-merge canonical data: schema sections merge key by key, everything else is replaced."""
    out = dict(base)
    fields = _fields(cls)
    for key, value in layer.items():
        tp = fields[key]
        if dataclasses.is_dataclass(tp) and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(tp, out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _construct(cls: type, data: dict, base=None):
    """Build the dataclass from canonical data on top of ``base`` (the defaults when None)."""
    base = cls() if base is None else base
    fields = _fields(cls)
    kwargs = {}
    for name, value in data.items():
        tp = fields[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = _construct(tp, value, getattr(base, name))
        else:
            kwargs[name] = _construct_value(tp, value)
    return dataclasses.replace(base, **kwargs)


def _construct_value(tp: Any, value: Any):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _construct(tp, value)
    if origin is Union:
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _construct(arg, value)
        return value
    if origin in (list, List) and isinstance(value, list):
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_construct_value(item_tp, v) for v in value]
    if origin in (dict, Dict) and isinstance(value, dict) and typing.get_args(tp):
        val_tp = typing.get_args(tp)[1]
        return {k: _construct_value(val_tp, v) for k, v in value.items()}
    return value


def _target_type(path: List[str], src: str):
    """Walk the schema along a dotted override path; return (canonical path segments, leaf type)."""
    tp: Any = Config
    canon: List[Any] = []
    shown = ""
    for seg in path:
        tp = _unwrap_optional(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            fields = _fields(tp)
            name = _key_of(fields, seg)
            if name is None:
                raise _unknown_key(src, shown, seg, fields)
            canon.append(name)
            shown = _join(shown, name)
            tp = fields[name]
        elif origin in (list, List):
            if not seg.isdigit():
                raise _fail(src, f"{shown} is a list: index it with a number ({shown}.0...), got {seg!r}")
            canon.append(int(seg))
            shown = _join(shown, int(seg))
            (tp,) = typing.get_args(tp) or (Any,)
        elif origin in (dict, Dict):
            canon.append(seg)
            shown = _join(shown, seg)
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        else:  # inside a free value (binarizer spec, Any): keep the key as written
            canon.append(seg)
            shown = _join(shown, seg)
            tp = Any
    return canon, tp, shown


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        if len(args) == 1:
            return args[0]
        dcs = [a for a in args if dataclasses.is_dataclass(a)]
        if len(dcs) == 1:
            return dcs[0]
    return tp


def parse_override(text: str):
    """``"TRAINING.EPOCHS=3"`` -> (canonical path, typed value); a bad key names the closest valid one."""
    src = f"override {text!r}"
    if "=" not in text:
        raise ConfigError(f"{src}: expected KEY=VALUE with a dotted key, e.g. TRAINING.EPOCHS=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{src}: empty key before '='")
    segments = [s for s in key.split(".")]
    if any(not s for s in segments):
        raise ConfigError(f"{src}: malformed dotted key {key!r}")
    canon, tp, shown = _target_type(segments, src)
    plain = _unwrap_optional(tp)
    if plain is str and raw.strip().lower() not in ("null", "~", "none"):
        value: Any = raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and raw.strip().lower() == "none":
            value = None
    value = _check(tp, value, shown, src)
    return canon, value, src


def _set_path(data: dict, canon: List[Any], value: Any, src: str) -> None:
    """Set ``value`` at the canonical path (missing mappings and lists on the way are created)."""
    node: Any = data
    for seg, nxt in zip(canon, canon[1:] + [None]):
        if isinstance(node, list) and seg >= len(node):
            raise _fail(src, f"index {seg} is out of range: the list has {len(node)} entries")
        if nxt is None:
            node[seg] = value
        else:
            if isinstance(node, dict) and node.get(seg) is None:
                node[seg] = [] if isinstance(nxt, int) else {}
            node = node[seg]


def apply_overrides(data: dict, overrides) -> dict:
    """Apply ``KEY=VALUE`` strings to canonical config data (returns a new dict)."""
    data = copy.deepcopy(data)
    for text in _alias_overrides(overrides):
        canon, value, src = parse_override(text)
        # a step list addressed by index exists only once the file's STEPS are merged in
        _set_path(data, canon, value, src)
        if canon[-1] == "PRESET" and value:  # the preset's binarizers replace the section's
            parent = data
            for seg in canon[:-1]:
                parent = parent[seg]
            parent.update(preset_specs(value, src))
    return data


def _inheritors(data: dict):
    """``(sub-mapping, {section: defaults between})`` of every step and two-stage stage of canonical ``data``: each
    inherits those sections, key by key, from the top-level ones; stage 2 of the two-stage schedule defaults to
    weight decay 0."""
    stage = {"OPTIMIZER": {}, "LR_SCHEDULE": {}, "DISTILLATION": {}}
    for step in data.get("STEPS") or []:
        yield step, {section: {} for section in _STEP_INHERITED}
    two = data.setdefault("SCHEDULE", {}).setdefault("TWO_STAGE", {})
    yield two.setdefault("STAGE1", {}), stage
    yield two.setdefault("STAGE2", {}), {**stage, "OPTIMIZER": {"WEIGHT_DECAY": 0.0}}


def _finish_steps(data: dict) -> dict:
    """``data`` with every step and stage holding the whole sections it inherits (:func:`_inheritors`)."""
    data = copy.deepcopy(data)
    for sub, sections in _inheritors(data):
        for section, defaults in sections.items():
            tp = _fields(Config)[section]
            sub[section] = _merge(tp, _merge(tp, data.get(section) or {}, defaults), sub.get(section) or {})
    return data


def _unfinish_steps(data: dict) -> dict:
    """The inverse of :func:`_finish_steps`: each step and stage keeps only the keys that differ from what it
    inherits, so that a :meth:`Config.replace` of a top-level section reaches the steps that inherit it."""
    def own(cls: type, value: dict, base: dict) -> dict:
        out = {}
        for key, item in value.items():
            tp = _fields(cls)[key]
            if dataclasses.is_dataclass(tp) and isinstance(item, dict) and isinstance(base.get(key), dict):
                item = own(tp, item, base[key])
                if item:
                    out[key] = item
            elif key not in base or base[key] != item:
                out[key] = item
        return out

    data = copy.deepcopy(data)
    for sub, sections in _inheritors(data):
        for section, defaults in sections.items():
            tp = _fields(Config)[section]
            sub[section] = own(tp, sub.get(section) or {}, _merge(tp, data.get(section) or {}, defaults))
    return data


#: old key -> (the one key that holds the setting, other keys it implies)
_ALIASES: Dict[str, tuple] = {
    "SCHEDULE.STAGED.LR_POLY_DROP_START_EPOCH": ("LR_SCHEDULE.START_EPOCH", {"LR_SCHEDULE.NAME": "poly"}),
    "SCHEDULE.STAGED.LR_POLY_DROP_DURATION_EPOCHS": ("LR_SCHEDULE.DURATION_EPOCHS", {}),
    "SCHEDULE.STAGED.POWER": ("LR_SCHEDULE.POWER", {}),
    "SCHEDULE.STAGED.DISABLE_WD_START_EPOCH": ("OPTIMIZER.DISABLE_WD_EPOCH", {}),
}


def _pop_path(node: dict, path: List[str]):
    """Pop ``path`` from nested raw data, matching keys case-insensitively; ``(found, value)``."""
    for i, seg in enumerate(path):
        if not isinstance(node, dict):
            return False, None
        key = _key_of(node, seg)
        if key is None:
            return False, None
        if i == len(path) - 1:
            return True, node.pop(key)
        node = node[key]
    return False, None  # pragma: no cover


def _put_path(node: dict, path: List[str], value: Any) -> None:
    for seg in path[:-1]:
        node = node.setdefault(_key_of(node, seg, seg), {})
    node[_key_of(node, path[-1], path[-1])] = value


def _move_aliases(raw: dict) -> dict:
    """Raw file data with the old spellings of :data:`_ALIASES` moved to the one key of each setting."""
    raw = copy.deepcopy(raw)
    for old, (new, implied) in _ALIASES.items():
        found, value = _pop_path(raw, old.split("."))
        if found and value is not None:
            _put_path(raw, new.split("."), value)
            for key, val in implied.items():
                _put_path(raw, key.split("."), val)
    return raw


def _alias_overrides(texts) -> List[str]:
    out = []
    for text in texts or ():
        key, sep, value = str(text).partition("=")
        alias = _ALIASES.get(key.strip().upper()) if sep else None
        if alias is None:
            out.append(text)
        elif value.strip().lower() not in ("null", "none", "~", ""):
            out += [f"{k}={v}" for k, v in alias[1].items()] + [f"{alias[0]}={value}"]
    return out


def _expand_presets(data: dict, src: str) -> dict:
    """Fill the binarizers a ``BCONFIG.PRESET`` (and each step's) names, where the same layer gives none."""
    def expand(section: Optional[dict], path: str) -> None:
        if not section or not section.get("PRESET"):
            return
        for key, spec in preset_specs(section["PRESET"], f"{src}: {path}.PRESET").items():
            section.setdefault(key, spec)

    expand(data.get("BCONFIG"), "BCONFIG")
    for i, step in enumerate(data.get("STEPS") or []):
        expand(step.get("BCONFIG"), f"STEPS[{i}].BCONFIG")
    return data


def preset_specs(name: str, where: str = "BCONFIG.PRESET") -> Dict[str, Optional[dict]]:
    """The canonical binarizer specs of the :mod:`bnn.presets` preset ``name`` (``{FIELD: spec}``)."""
    from .. import presets

    try:
        bconfig = presets.get_preset(name)
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc.args[0]}") from None
    out = {}
    for key in _BCONFIG_FIELDS:
        factory = getattr(bconfig, key.lower())
        out[key] = None if factory is None else _factory_spec(factory)
    return out


def _factory_spec(factory) -> dict:
    """``{"name", "args"}`` of a binarizer class or a ``with_args`` factory (the class's registered name)."""
    from ..config import Factory

    cls, args = (factory.cls, dict(factory.kwargs)) if isinstance(factory, Factory) else (factory, {})
    names = [name for name, known in binarizer_names().items() if known is cls]
    return {"name": names[0] if names else cls.__name__, "args": args}


def load_run_config(run_dir: str) -> Config:
    """The validated config of a finished or interrupted run: ``run_dir/config.yaml`` as training saved it."""
    path = os.path.join(str(run_dir), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_config(path)


def load_config(config_path: Optional[str] = None, env_path: Optional[str] = None, overrides=()) -> Config:
    """Load and validate a run's config: defaults < ``config_path`` < ``env_path`` < ``overrides``.

    Raises :class:`ConfigError` (one line: file, key path, closest valid key) on any bad input.
    """
    return _build([(path, load_yaml(path)) for path in (config_path, env_path) if path is not None], overrides)


def _build(layers: List[tuple], overrides=()) -> Config:
    """The validated :class:`Config` of ``[(source, raw mapping), ...]`` (later layers winning) and ``overrides``:
    the one path of YAML files, :meth:`Config.from_dict` and :meth:`Config.replace`."""
    data: dict = {}
    for src, raw in layers:
        layer = _expand_presets(_check(Config, _move_aliases(raw), "", src), src)
        nncf = layer.get("NNCF_CONFIG")
        if nncf and not os.path.isabs(nncf) and os.path.isfile(src):
            # an NNCF JSON named in a file is relative to that file when it exists there
            candidate = os.path.join(os.path.dirname(os.path.abspath(src)), nncf)
            if os.path.isfile(candidate):
                layer["NNCF_CONFIG"] = candidate
        data = _merge(Config, data, layer)
    data = _finish_steps(apply_overrides(data, overrides))
    src = ", ".join(src for src, _ in layers) or "config"
    cfg = _construct(Config, _check(Config, data, "", src))  # re-checked after merging (cross-key checks)
    if cfg.NNCF_CONFIG:
        load_nncf_json(cfg.resolve_path(cfg.NNCF_CONFIG) if not os.path.isfile(cfg.NNCF_CONFIG) else cfg.NNCF_CONFIG)
    bounded = [(f"STEPS[{i}].EPOCHS", step.EPOCHS, 1) for i, step in enumerate(cfg.STEPS)] + [
        ("TRAINING.EPOCHS", cfg.TRAINING.EPOCHS, 0), ("TRAINING.BATCH_SIZE", cfg.TRAINING.BATCH_SIZE, 1),
        ("TRAINING.BATCH_MULTIPLIER", cfg.TRAINING.BATCH_MULTIPLIER, 1)]
    for key, value, least in bounded:
        if value < least:
            raise ConfigError(f"{src}: {key} must be >= {least}, got {value}")
    if cfg.LR_SCHEDULE.NAME == "poly" and cfg.LR_SCHEDULE.DURATION_EPOCHS is None:
        raise ConfigError(f"{src}: LR_SCHEDULE.NAME is poly: set LR_SCHEDULE.DURATION_EPOCHS (and START_EPOCH)")
    return cfg


_COMMENT = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*')


def load_nncf_json(path: str) -> dict:
    """Read an NNCF algorithm config (JSON with ``//`` comments, as in the NNCF docs)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: NNCF config file not found (NNCF_CONFIG)")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text = _COMMENT.sub(lambda m: m.group(1) or "", text)
    text = re.sub(r",(\s*[}\]])", r"\1", text)  # trailing commas
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid NNCF JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an NNCF config must be a JSON object")
    return data


def config_diff(old: Config, new: Config) -> List[tuple]:
    """``[(dotted key, old value, new value), ...]`` of the settings that differ between two configs."""
    out: List[tuple] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys(list(a) + list(b)):
                walk(a.get(key), b.get(key), _join(path, key))
        elif a != b:
            out.append((path, a, b))

    walk(config_to_dict(old), config_to_dict(new), "")
    return out


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict of a config (what is written to ``config.yaml`` in the experiment directory)."""
    return dataclasses.asdict(cfg)


def config_from_record(record: dict, src: str) -> Config:
    """The inverse of :func:`config_to_dict`: a config recorded by a run (e.g. in a checkpoint), validated key by
    key with the same one-line errors (``src`` names where it came from). Unlike :meth:`Config.from_dict` it
    takes the record as it is, already merged and resolved: no presets expanded, no step inheritance redone
    and no file it names read (a run folder moved to another machine still loads)."""
    return _construct(Config, _check(Config, record, "", src))
