"""Recipes end to end: a validated :class:`~bnn.engine.schema.Config` -> data, model, teacher, and the
recipe's steps trained one after another. The one driver behind ``bnn-train`` and Python users::

    from bnn.engine import load_config, train
    result = train(load_config("configs/cifar10_xnor_resnet18.yaml", overrides=["TRAINING.EPOCHS=3"]))

    # your own model and loaders, the recipe's schedule, optimizer and binarization
    result = train(cfg, model=my_float_model, train_loader=tl, val_loader=vl)

A recipe runs as one step, as the two stages of ``SCHEDULE.NAME: two_stage`` (ReActNet's two-step
training: binary activations with float weights, then all binary, started from stage 1's
checkpoint), or as the ``STEPS`` of a multi-step recipe (each step re-prepares the trained model with
its own ``BCONFIG``, keeping every learned parameter). Each step writes its own directory
(``stage1``/``stage2``, ``step<i>_<name>``); a finished step is not trained again on ``resume``.

The builders are public because evaluation and packing build the model exactly as training does:
:func:`build_model` (the prepared model of the recipe's last step), :func:`build_datasets`,
:func:`build_val_loader` and :func:`run_dir`.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
import yaml

from ..switches import binarizes
from .binarization_schedule import Callback
from .schema import (BConfigCfg, Config, ConfigError, DistillationCfg, LRScheduleCfg, OptimizerCfg, build_bconfig,
                     config_diff, config_to_dict, load_config, load_nncf_json)

__all__ = [
    "RunStep", "plan_steps", "train", "run_dir", "build_model", "build_float_model", "build_datasets",
    "build_val_loader", "build_teacher", "float_layers", "check_device", "check_model_kwargs", "resume_config",
    "nncf_recipe", "step_config",
]

#: settings a resumed run cannot change: the steps per epoch (the LR schedule is indexed by optimizer step),
#: the data, the model and its binarization
FIXED_ON_RESUME = ("TRAINING.BATCH_SIZE", "TRAINING.BATCH_MULTIPLIER", "TRAINING.MAX_STEPS_PER_EPOCH", "DATA.NAME",
                   "DATA.TRAIN_SIZE", "DATA.KWARGS", "DATA.SEED", "MODEL.NAME", "MODEL.KWARGS", "MODEL.FLOAT_LAYERS",
                   "MODEL.FLOAT_DOWNSAMPLE", "BCONFIG", "SCHEDULE", "STEPS", "NNCF_CONFIG", "OPTIMIZER.NAME",
                   "EXPERIMENT.DIR", "EXPERIMENT.NAME")

#: files of a run directory (a new run refuses a directory holding any of them, see :func:`train`)
RUN_FILES = ("config.yaml", "train.log", "metrics.csv", "curves.png", "last.pth", "best.pth")


def _fail(section: str, exc: BaseException) -> ConfigError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"{section}: {msg}")


def run_dir(cfg: Config) -> str:
    """``EXPERIMENT.DIR/EXPERIMENT.NAME`` taken from ``PROJECT.ROOT``: where the run writes (:meth:`Config.run_dir`)."""
    return cfg.run_dir()


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def _data_kwargs(cfg: Config) -> Dict[str, Any]:
    d = cfg.DATA
    kwargs = dict(d.KWARGS)
    if d.TRAIN_SIZE is not None:
        kwargs["train_size"] = d.TRAIN_SIZE
    if d.VAL_SIZE is not None:
        kwargs["val_size"] = d.VAL_SIZE
    return kwargs


def build_datasets(cfg: Config):
    """``(train_set, val_set, num_classes, in_channels)`` of the ``DATA`` section."""
    from .. import data as bdata

    d = cfg.DATA
    kwargs = _data_kwargs(cfg)
    try:
        info = bdata.dataset_info(d.NAME)
        if str(d.NAME).lower() in ("synthetic", "synthetic_shapes", "shapes"):
            kwargs.setdefault("seed", d.SEED)
        root = cfg.resolve_path(d.ROOT) if d.ROOT else None
        train_set, val_set = bdata.build_datasets(d.NAME, root=root, download=d.DOWNLOAD, **kwargs)
    except bdata.DatasetNotFoundError:
        raise
    except (ValueError, TypeError) as exc:
        raise _fail("DATA", exc) from None
    num_classes = kwargs.get("num_classes") or info.get("num_classes")
    if num_classes is None:
        num_classes = len(getattr(train_set, "classes", []) or []) or None
    return train_set, val_set, num_classes, info.get("in_channels")


def _record_data_shape(cfg: Config, num_classes: Optional[int], in_channels: Optional[int]) -> Config:
    """``cfg`` with the class and channel counts taken from the data written into ``MODEL.KWARGS``, so that
    the saved ``config.yaml`` rebuilds the model without the data (an image folder's class count)."""
    from .. import models

    accepted = set(models.model_options(cfg.MODEL.NAME))
    kwargs = dict(cfg.MODEL.KWARGS)
    if num_classes and "num_classes" in accepted:
        kwargs.setdefault("num_classes", int(num_classes))
    if in_channels and in_channels != 3 and "in_channels" in accepted:
        kwargs.setdefault("in_channels", int(in_channels))
    return dataclasses.replace(cfg, MODEL=dataclasses.replace(cfg.MODEL, KWARGS=kwargs))


def _loaders(cfg: Config, train_set, val_set, distributed: bool = False):
    from ..data import build_loaders

    t = cfg.TRAINING
    return build_loaders(train_set, val_set, batch_size=t.BATCH_SIZE, workers=cfg.HARDWARE.WORKERS,
                         distributed=distributed, seed=t.SEED, val_batch_size=t.EVAL_BATCH_SIZE)


def build_val_loader(cfg: Config):
    """The validation ``DataLoader`` of a recipe, as training builds it (``TRAINING.EVAL_BATCH_SIZE`` or
    ``BATCH_SIZE``, ``HARDWARE.WORKERS``, no shuffling)."""
    train_set, val_set, _, _ = build_datasets(cfg)
    return _loaders(cfg, train_set, val_set)[1]


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def _data_shape(cfg: Config) -> Tuple[Optional[int], Optional[int]]:
    """``(num_classes, in_channels)`` of the data set without building it (None where unknown)."""
    from ..data import dataset_info

    try:
        info = dataset_info(cfg.DATA.NAME)
    except ValueError as exc:
        raise _fail("DATA.NAME", exc) from None
    return cfg.DATA.KWARGS.get("num_classes") or info.get("num_classes"), info.get("in_channels")


def check_model_kwargs(cfg: Config) -> None:
    """``MODEL.NAME`` (and a distillation teacher named by ``DISTILLATION.TEACHER``) is a registered model and
    every ``KWARGS`` key one of its arguments (one line naming the key and the closest argument otherwise);
    nothing is built."""
    from .. import models
    from ..hints import did_you_mean

    named = [("MODEL", cfg.MODEL.NAME, cfg.MODEL.KWARGS)]
    for where, dist in [("DISTILLATION", cfg.DISTILLATION)] + [(f"STEPS[{i}].DISTILLATION", s.DISTILLATION)
                                                              for i, s in enumerate(cfg.STEPS)]:
        if dist.ENABLED and dist.TEACHER not in (None, "same", "self"):
            named.append((f"{where}.TEACHER", dist.TEACHER, dist.TEACHER_KWARGS))
    for where, name, kwargs in named:
        if name not in models.list_models():
            key = f"{where}.NAME" if where == "MODEL" else where
            raise ConfigError(f"{key}: unknown model {name!r}" + did_you_mean(name, models.list_models()))
        accepted = models.model_options(name)
        for key in kwargs:
            if key not in accepted:
                prefix = "MODEL.KWARGS" if where == "MODEL" else where + "_KWARGS"
                raise ConfigError(f"{prefix}.{key}: {name} has no argument {key!r}" + did_you_mean(key, accepted))


def build_float_model(cfg: Config, num_classes: Optional[int] = None, in_channels: Optional[int] = None,
                      load_checkpoint: bool = True) -> nn.Module:
    """The float model of the ``MODEL`` section (``num_classes`` / ``in_channels`` filled from the data set
    when the model takes them and ``MODEL.KWARGS`` does not set them), with ``MODEL.CHECKPOINT`` loaded."""
    from .. import models

    check_model_kwargs(cfg)
    if num_classes is None and in_channels is None:
        num_classes, in_channels = _data_shape(cfg)
    kwargs = dict(cfg.MODEL.KWARGS)
    accepted = set(models.model_options(cfg.MODEL.NAME))
    if num_classes and "num_classes" in accepted:
        kwargs.setdefault("num_classes", int(num_classes))
    if in_channels and "in_channels" in accepted and in_channels != 3:
        kwargs.setdefault("in_channels", int(in_channels))
    try:
        model = models.get_model(cfg.MODEL.NAME, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _fail("MODEL", exc) from None
    if cfg.MODEL.CHECKPOINT and load_checkpoint:
        from .checkpoint import load_model_state

        load_model_state(model, cfg.resolve_path(cfg.MODEL.CHECKPOINT))
    return model


def float_layers(cfg: Config, model: nn.Module) -> List[str]:
    """``MODEL.FLOAT_LAYERS``, or the model's own float layers when null."""
    if cfg.MODEL.FLOAT_LAYERS is not None:
        return list(cfg.MODEL.FLOAT_LAYERS)
    from ..models import float_layer_names

    return list(float_layer_names(model, downsample=cfg.MODEL.FLOAT_DOWNSAMPLE))


def prepare(model: nn.Module, bcfg: BConfigCfg, layers_float: Sequence[str]) -> nn.Module:
    """``bnn.prepare_binary_model`` with a validated ``BCONFIG`` section (again on a prepared model
    for the next step of a multi-step recipe: learned binarizer parameters are kept). A section that names
    no binarizer (no preset, no binarizer key, no override) leaves the model as it is, so a model prepared
    in Python and handed to :func:`train` keeps its binarizers."""
    from ..prepare import prepare_binary_model

    if not (bcfg.ACTIVATION_PRE_PROCESS or bcfg.ACTIVATION_POST_PROCESS or bcfg.WEIGHT_PRE_PROCESS or bcfg.OVERRIDES):
        return model

    kwargs = build_bconfig(bcfg, float_layers=layers_float)
    try:
        return prepare_binary_model(model, kwargs["bconfig"], custom_config_layers_name=kwargs["custom_config_layers_name"],
                                    ignore_layers_name=kwargs["ignore_layers_name"])
    except (ValueError, KeyError) as exc:
        raise _fail("BCONFIG", exc) from None


def _nncf(cfg: Config) -> Optional[dict]:
    if not cfg.NNCF_CONFIG:
        return None
    path = cfg.NNCF_CONFIG if os.path.isfile(cfg.NNCF_CONFIG) else cfg.resolve_path(cfg.NNCF_CONFIG)
    return load_nncf_json(path)


def nncf_recipe(cfg: Config, s) -> Config:
    """``cfg`` with NNCF's staged schedule ``s`` (the ``bnn.NNCFSchedule`` of ``bnn.from_nncf_config``) in the
    one place of each setting: ``SCHEDULE.STAGED``, the ``poly`` LR schedule, ``OPTIMIZER.DISABLE_WD_EPOCH``
    and, where the recipe leaves it at 1, ``TRAINING.BATCH_MULTIPLIER``."""
    replace = dataclasses.replace
    return replace(
        cfg,
        SCHEDULE=replace(cfg.SCHEDULE, NAME="staged", STAGED=replace(
            cfg.SCHEDULE.STAGED, ACTIVATIONS_BIN_START_EPOCH=s.activations_bin_start_epoch,
            WEIGHTS_BIN_START_EPOCH=s.weights_bin_start_epoch)),
        LR_SCHEDULE=replace(cfg.LR_SCHEDULE, NAME="poly", START_EPOCH=float(s.lr_poly_drop_start_epoch),
                            DURATION_EPOCHS=float(s.lr_poly_drop_duration_epochs)),
        OPTIMIZER=replace(cfg.OPTIMIZER, DISABLE_WD_EPOCH=s.disable_wd_start_epoch),
        TRAINING=replace(cfg.TRAINING, BATCH_MULTIPLIER=cfg.TRAINING.BATCH_MULTIPLIER if cfg.TRAINING.BATCH_MULTIPLIER > 1
                         else s.batch_multiplier),
    )


def _apply_nncf(cfg: Config, model: nn.Module, nncf_json: dict):
    """``(prepared model, cfg)``: the model binarized by the NNCF JSON and the recipe with its schedule
    (:func:`nncf_recipe`)."""
    from ..nncf_config import from_nncf_config

    try:
        model, schedule = from_nncf_config(model, nncf_json)
    except (ValueError, KeyError) as exc:
        raise _fail(f"NNCF_CONFIG {cfg.NNCF_CONFIG}", exc) from None
    return model, nncf_recipe(cfg, schedule)


def build_model(cfg: Config, num_classes: Optional[int] = None, in_channels: Optional[int] = None,
                load_checkpoint: bool = False) -> nn.Module:
    """The prepared model of a recipe as training ends with it: the float model of ``MODEL``, binarized
    by the NNCF JSON or by the ``BCONFIG`` of each step in turn (all binarizers on). Load a run's
    ``best.pth`` / ``last.pth`` into it to evaluate or pack the run. ``MODEL.CHECKPOINT`` (the float
    starting point of training) is loaded only with ``load_checkpoint=True``."""
    model = build_float_model(cfg, num_classes, in_channels, load_checkpoint=load_checkpoint)
    nncf_json = _nncf(cfg)
    if nncf_json is not None:
        return _apply_nncf(cfg, model, nncf_json)[0]
    layers_float = float_layers(cfg, model)
    for step in plan_steps(cfg, ""):
        if step.bconfig is not None:
            model = prepare(model, step.bconfig, layers_float)
    return model


def build_teacher(cfg: Config, dist: DistillationCfg, float_model: nn.Module, num_classes=None) -> nn.Module:
    """The frozen float teacher: a copy of the float model, or ``DISTILLATION.TEACHER`` by name."""
    from .. import models

    if dist.TEACHER in (None, "same", "self"):
        teacher = copy.deepcopy(float_model)
    else:
        kwargs = dict(dist.TEACHER_KWARGS)
        if num_classes:
            kwargs.setdefault("num_classes", int(num_classes))
        try:
            teacher = models.get_model(dist.TEACHER, **kwargs)
        except (ValueError, TypeError) as exc:
            raise _fail("DISTILLATION.TEACHER", exc) from None
    if dist.TEACHER_CHECKPOINT:
        from .checkpoint import load_model_state

        load_model_state(teacher, cfg.resolve_path(dist.TEACHER_CHECKPOINT))
    t_classes, s_classes = getattr(teacher, "num_classes", None), getattr(float_model, "num_classes", None)
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ConfigError(f"DISTILLATION: the teacher has {t_classes} classes but the model has {s_classes} "
                          f"(DISTILLATION.TEACHER_KWARGS.num_classes / MODEL.KWARGS.num_classes)")
    return teacher


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------
@dataclass
class RunStep:
    """One training run of a recipe: its epochs, directory, BConfig to (re)apply and its sections."""

    name: str
    epochs: int
    exp_dir: str
    bconfig: Optional[BConfigCfg]  # prepare with it before the step (None: keep the model as it is)
    optimizer: OptimizerCfg
    lr_schedule: LRScheduleCfg
    distillation: DistillationCfg
    callbacks: List[Dict[str, Any]] = field(default_factory=list)  # besides SCHEDULE's (the two-stage stage)
    init_from_previous: Optional[str] = None  # "last" / "best": start from the previous step's checkpoint


def plan_steps(cfg: Config, exp_dir: str) -> List[RunStep]:
    """The runs of a recipe, in order: one, the two stages, or the ``STEPS`` of a multi-step recipe (the
    binarization callback of ``SCHEDULE``, staged or gradual, is the Trainer's, each step's)."""
    if cfg.STEPS:
        if cfg.SCHEDULE.NAME == "two_stage":
            raise ConfigError("SCHEDULE.NAME: two_stage cannot be combined with STEPS (write the stages as two STEPS)")
        steps = []
        for i, s in enumerate(cfg.STEPS, 1):
            sub = f"step{i}" if not s.NAME else f"step{i}_{s.NAME}"
            steps.append(RunStep(s.NAME or f"step{i}", s.EPOCHS, os.path.join(exp_dir, sub), s.BCONFIG, s.OPTIMIZER,
                                 s.LR_SCHEDULE, s.DISTILLATION, [], "last" if i > 1 else None))
        return steps
    if cfg.SCHEDULE.NAME == "two_stage":
        two = cfg.SCHEDULE.TWO_STAGE
        return [RunStep(f"stage{i}", st.EPOCHS, os.path.join(exp_dir, f"stage{i}"), cfg.BCONFIG if i == 1 else None,
                        st.OPTIMIZER, st.LR_SCHEDULE, st.DISTILLATION, [{"name": "two_stage", "stage": i}],
                        two.INIT_FROM if i == 2 else None)
                for i, st in enumerate((two.STAGE1, two.STAGE2), 1)]
    return [RunStep("train", cfg.TRAINING.EPOCHS, exp_dir, cfg.BCONFIG, cfg.OPTIMIZER, cfg.LR_SCHEDULE,
                    cfg.DISTILLATION)]


def step_config(cfg: Config, step: RunStep) -> Config:
    """The config the :class:`~bnn.engine.Trainer` of one step of a recipe reads: ``cfg`` with the step's
    epochs and its ``OPTIMIZER`` / ``LR_SCHEDULE`` / ``DISTILLATION`` sections."""
    replace = dataclasses.replace
    return replace(cfg, TRAINING=replace(cfg.TRAINING, EPOCHS=step.epochs), OPTIMIZER=step.optimizer,
                   LR_SCHEDULE=step.lr_schedule, DISTILLATION=step.distillation)


def _finished(path: str, epochs: int) -> bool:
    if not os.path.exists(path):
        return False
    from .checkpoint import load_checkpoint

    return int(load_checkpoint(path, map_location="cpu").get("epoch", -1)) >= epochs


def write_config(cfg: Config, exp_dir: str) -> None:
    """``exp_dir/config.yaml``: the resolved config (written to a temporary file, then renamed)."""
    from .distributed import is_main_process

    if not is_main_process():
        return
    os.makedirs(exp_dir, exist_ok=True)
    tmp = os.path.join(exp_dir, ".config.yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, os.path.join(exp_dir, "config.yaml"))


def earlier_run(exp_dir: str) -> Optional[str]:
    """The first file of an earlier run found in ``exp_dir`` or its step directories (None: none)."""
    if not os.path.isdir(exp_dir):
        return None
    for root, dirs, files in os.walk(exp_dir):
        dirs[:] = [d for d in dirs if d.startswith(("step", "stage"))]
        for name in RUN_FILES:
            if name in files:
                return os.path.join(root, name)
    return None


def _delete_run(exp_dir: str) -> None:
    """Delete a run's own files (:data:`RUN_FILES`, TensorBoard events, step directories); other files stay."""
    for entry in os.listdir(exp_dir):
        path = os.path.join(exp_dir, entry)
        if os.path.isdir(path) and (entry == "tensorboard" or entry.startswith(("step", "stage"))):
            shutil.rmtree(path)
        elif entry in RUN_FILES:
            os.remove(path)


def check_device(cfg: Config) -> None:
    """A CUDA device asked for (``--gpu N``, ``HARDWARE.DEVICE: cuda...``) exists on this machine."""
    import torch

    device = str(cfg.HARDWARE.DEVICE)
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"HARDWARE.DEVICE={device}: CUDA is not available on this machine "
                          "(use --gpu cpu or HARDWARE.DEVICE=auto)")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise ConfigError(f"HARDWARE.DEVICE={device}: this machine has {torch.cuda.device_count()} GPU(s) "
                          f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")


_STAGE_KEY = re.compile(r"^(SCHEDULE\.TWO_STAGE\.STAGE\d+|STEPS(\.\d+|\[\d+\]))\.(?P<rest>.+)$")


def _fixed_on_resume(key: str) -> bool:
    """Whether changing ``key`` on ``--resume`` breaks the run's schedule (:data:`FIXED_ON_RESUME`). A key inside
    a step or two-stage stage is judged by its own part (a stage's learning rate may change, its epochs,
    name and binarizers may not)."""
    stage = _STAGE_KEY.match(key)
    if stage:
        key = stage.group("rest")
        if key.split(".")[0] in ("EPOCHS", "NAME"):
            return True
    return any(key == f or key.startswith(f + ".") or key.startswith(f + "[") for f in FIXED_ON_RESUME)


def resume_config(cfg: Config, resume: str, overrides: Sequence[str] = (), log: Callable[[str], None] = print) -> Config:
    """The config a ``--resume`` continues with: the run's saved ``config.yaml`` with only ``overrides``
    applied. Says which settings differ from the saved ones; a change that would break the run's schedule
    (batch size, data, model, binarization, fewer epochs than the run has) is a :class:`ConfigError`.

    ``cfg`` locates the run (``EXPERIMENT.DIR/NAME``) unless ``resume`` is a run directory or checkpoint.
    A run without a saved ``config.yaml`` keeps ``cfg``.
    """
    if resume in (None, "auto", True):
        folder = run_dir(cfg)
    else:
        folder = resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))
    saved_path = os.path.join(folder, "config.yaml")
    if not os.path.isfile(saved_path):
        return cfg
    saved = load_config(saved_path)
    new = saved.replace(*overrides)  # like a fresh override, it reaches the steps that inherit the key
    changes = config_diff(saved, new)
    for key, old, value in changes:
        if _fixed_on_resume(key):
            raise ConfigError(f"--resume {folder}: {key} {old!r} -> {value!r} would not continue the run's schedule "
                              f"(the learning rate and binarization are indexed by step); resume with {old!r}, "
                              f"or start a new run (another --exp_name, or --overwrite)")
    if new.total_epochs < saved.total_epochs:
        raise ConfigError(f"--resume {folder}: the run has {saved.total_epochs} epochs, {new.total_epochs} would cut "
                          f"its schedule short; resume with TRAINING.EPOCHS >= {saved.total_epochs}")
    if changes:
        log(f"resume: settings changed from {saved_path}: "
            + ", ".join(f"{k} {o!r} -> {v!r}" for k, o, v in changes))
        if new.total_epochs != saved.total_epochs and new.LR_SCHEDULE.NAME in ("cosine", "linear"):
            log(f"resume: the {new.LR_SCHEDULE.NAME} learning-rate schedule now spans {new.total_epochs} epochs "
                f"instead of {saved.total_epochs}: the rate jumps to its value on the longer schedule")
    return new


def _check_tensorboard(cfg: Config, log: Callable[[str], None]) -> None:
    if not cfg.EXPERIMENT.TENSORBOARD:
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log("warning: EXPERIMENT.TENSORBOARD is true but the tensorboard package is not installed "
            "(pip install tensorboard); training without TensorBoard events")


def train(cfg: Config, *, model: Optional[nn.Module] = None, train_loader=None, val_loader=None,
          teacher: Optional[nn.Module] = None, callbacks: Sequence[Callback] = (), resume: Optional[str] = None,
          overwrite: bool = False, log: Callable[[str], None] = print, notes: Sequence[str] = ()):
    """Train the recipe ``cfg`` step by step; returns the :class:`~bnn.engine.TrainResult` of the last step.

    ``model``: a model to use instead of ``MODEL``: prepared by each step's ``BCONFIG`` as the recipe's own
    model is, or used as given when the recipe names no binarizer (a model you prepared yourself).
    ``train_loader`` / ``val_loader``: instead of ``DATA``; ``teacher``: instead of ``DISTILLATION.TEACHER``;
    ``callbacks``: :class:`Callback` objects added to every step's.

    ``resume``: None (a fresh run), ``"auto"`` (continue the run directory: finished steps are skipped,
    the unfinished one continues from its ``last.pth``) or a checkpoint / run directory path.
    A fresh run refuses a run directory that holds an earlier run (``ConfigError`` naming it) unless
    ``overwrite``, which deletes the earlier run first: an earlier run's files are never mixed with a new one's.
    ``log``: where the driver's own messages go (besides ``train.log``); ``notes``: earlier messages (what
    :func:`resume_config` said) that ``train.log`` should hold too.
    """
    from .checkpoint import load_model_state
    from .distributed import init_distributed, is_distributed
    from .run_dir import run_record
    from .trainer import Trainer, seed_everything

    exp_dir = run_dir(cfg)
    resume_path = None
    if resume not in (None, "auto"):
        if os.path.isdir(resume):
            exp_dir, resume = os.path.abspath(resume), "auto"
        elif not os.path.isfile(resume):
            raise ConfigError(f"--resume {resume}: no such checkpoint file or experiment directory")
        else:
            resume_path = resume
    if not resume:
        found = earlier_run(exp_dir)
        if found and not overwrite:
            raise ConfigError(f"{exp_dir} holds an earlier run ({os.path.basename(found)}): continue it with --resume, "
                              f"replace it with --overwrite, or choose another --exp_name")
    check_device(cfg)
    nncf_json = _nncf(cfg)
    import torch

    use_cuda = cfg.HARDWARE.DEVICE != "cpu" and torch.cuda.is_available()
    init_distributed(cfg.HARDWARE.DIST_BACKEND, use_cuda=use_cuda)
    seed_everything(cfg.TRAINING.SEED)  # the model's initial weights depend on the seed only
    num_classes = in_channels = None
    if train_loader is None:
        train_set, val_set, num_classes, in_channels = build_datasets(cfg)
        train_loader, built_val = _loaders(cfg, train_set, val_set, distributed=is_distributed())
        val_loader = built_val if val_loader is None else val_loader
    seed_everything(cfg.TRAINING.SEED)
    from_recipe = model is None  # then the checkpoints record how to rebuild it (bnn.load_trained)
    if model is None:
        model = build_float_model(cfg, num_classes, in_channels)
        cfg = _record_data_shape(cfg, num_classes, in_channels)
    float_model = model
    layers_float = float_layers(cfg, model)
    distilled = [s.distillation for s in plan_steps(cfg, exp_dir) if s.distillation.ENABLED]
    # a teacher that is "the float model" follows it: after a float step (one that binarizes nothing) it is
    # that step's trained network, not the untrained one the recipe started with
    teacher_follows = bool(distilled and teacher is None and _same_model_teacher(distilled[0]))
    if distilled and teacher is None:
        teacher = build_teacher(cfg, distilled[0], float_model, num_classes)

    if nncf_json is not None:
        model, cfg = _apply_nncf(cfg, model, nncf_json)
    steps = plan_steps(cfg, exp_dir)
    pending = list(notes)  # for train.log, which the first trained step opens

    def say(msg: str) -> None:
        log(msg)
        pending.append(msg)

    _check_tensorboard(cfg, say)
    if not resume and overwrite and earlier_run(exp_dir):
        say(f"bnn-train: --overwrite: deleting the earlier run in {exp_dir}")
        _delete_run(exp_dir)
    write_config(cfg, exp_dir)

    result = None
    previous: Optional[RunStep] = None
    for i, step in enumerate(steps):
        last = os.path.join(step.exp_dir, "last.pth")
        if step.bconfig is not None and nncf_json is None:
            model = prepare(model, step.bconfig, layers_float)
        if step.init_from_previous == "best" and previous is not None and not (resume and os.path.exists(last)):
            best = os.path.join(previous.exp_dir, "best.pth")
            if os.path.exists(best):  # (after "last", the model in memory already is the previous step's end)
                load_model_state(model, best)
        record = run_record(cfg, i, num_classes, in_channels, nncf_json) if from_recipe else None
        trainer = Trainer(model, train_loader, val_loader, step_config(cfg, step),
                          callbacks=list(step.callbacks) + list(callbacks), exp_dir=step.exp_dir,
                          teacher=teacher if step.distillation.ENABLED else None, run_info=record, notes=pending)
        if len(steps) > 1:
            log(f"bnn-train: {step.name} ({i + 1}/{len(steps)}): {step.epochs} epochs in {step.exp_dir}")
        if resume and len(steps) > 1 and i < len(steps) - 1 and _finished(last, step.epochs):
            load_model_state(model, last)  # a finished step: its final weights, not trained again
            result = trainer.load_result()
        elif resume_path is not None and i == len(steps) - 1:
            result, pending = trainer.fit(resume=resume_path), []
        else:
            result, pending = trainer.fit(resume="auto" if resume else False), []
        trainer.close()
        previous = step
        if teacher_follows and not binarizes(model):
            teacher = copy.deepcopy(model)
    return result


def _same_model_teacher(dist: DistillationCfg) -> bool:
    return dist.TEACHER in (None, "same", "self") and not dist.TEACHER_CHECKPOINT

