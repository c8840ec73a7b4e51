"""``bnn-train``: train a binary network from a YAML recipe (the seed's ``run_dev.py`` command line).

::

    bnn-train                                              # the embedded quick start (configs/quickstart.yaml)
    bnn-train --config configs/cifar10_xnor_resnet18.yaml TRAINING.EPOCHS=3 DATA.DOWNLOAD=true
    bnn-train -u dima --exp_name try1 --gpu 0 --seed 1     # configs/env_dima.yaml on top of the recipe
    bnn-train --config ... --resume                        # continue EXPERIMENT.DIR/<name> where it stopped
    torchrun --nproc_per_node=4 -m bnn.cli --config ...    # several GPUs (or Gloo processes on CPU)

The config is layered (:mod:`bnn.engine.schema`): schema defaults < ``--config`` < ``-u USER``'s
``configs/env_USER.yaml`` < ``KEY=VALUE`` overrides; ``--exp_name``, ``--gpu`` and ``--seed`` are
shorthands for ``EXPERIMENT.NAME``, ``HARDWARE.DEVICE`` and ``TRAINING.SEED``. Any bad input (a config
typo, a missing data root, a corrupted or mismatched checkpoint, a NaN loss) ends the run with one line
on stderr and exit status 2 (``BNN_DEBUG=1`` shows the traceback instead).

A run writes to ``EXPERIMENT.DIR/EXPERIMENT.NAME``: ``config.yaml`` (the resolved config),
``train.log``, ``metrics.csv``, ``curves.png`` (loss, accuracy and learning rate), ``last.pth`` and
``best.pth``. Multi-step recipes (``STEPS``) and the two-stage schedule write one sub-directory per
step (``step1_<name>``, ``step2_<name>``; ``stage1``, ``stage2``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import yaml

from .engine.schema import (
    Config,
    ConfigError,
    DistillationCfg,
    LRScheduleCfg,
    OptimizerCfg,
    build_bconfig,
    config_to_dict,
    load_config,
    load_nncf_json,
)

__all__ = ["main", "build_parser", "resolve_config", "run", "RunStep", "plan_steps", "find_config_dir", "QUICKSTART"]

#: The quick start, embedded so that ``bnn-train`` runs even where ``configs/`` is not shipped
#: (``tests/test_cli.py`` checks it equals ``configs/quickstart.yaml``).
QUICKSTART: Dict[str, Any] = {
    "PROJECT": {"ROOT": "."},
    "HARDWARE": {"WORKERS": 2, "DEVICE": "auto"},
    "TRAINING": {"EPOCHS": 15, "BATCH_SIZE": 64, "SEED": 0},
    "EXPERIMENT": {"DIR": "experiments", "NAME": "quickstart"},
    "DATA": {"NAME": "synthetic"},
    "MODEL": {"NAME": "resnet18", "KWARGS": {"num_classes": 10, "stem": "imagenet", "width": 16, "block": "seed003"}},
    "BCONFIG": {
        "ACTIVATION_PRE_PROCESS": "BasicInputBinarizer",
        "WEIGHT_PRE_PROCESS": "XNORWeightBinarizer",
        "ACTIVATION_POST_PROCESS": None,
    },
    "OPTIMIZER": {"NAME": "adam", "LR": 0.003, "WEIGHT_DECAY": 0.00001},
    "LR_SCHEDULE": {"NAME": "cosine"},
    "SCHEDULE": {"NAME": "none"},
}


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def build_parser(prog: str = "bnn-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="PyTorch Binary Network Training. With no arguments: the embedded quick start.",
        epilog="Overrides: trailing KEY=VALUE with dotted keys of the config schema, e.g. "
        "TRAINING.EPOCHS=3 OPTIMIZER.LR=0.01 MODEL.KWARGS.width=32 STEPS.0.EPOCHS=2.",
    )
    parser.add_argument("--config", metavar="PATH", help="recipe YAML (default: configs/quickstart.yaml, the quick start)")
    parser.add_argument("-u", "--user", metavar="USER", help="read configs/env_USER.yaml (layered on top of --config)")
    parser.add_argument("--exp_name", metavar="exp_name", help="experiment name (EXPERIMENT.NAME)")
    parser.add_argument("--gpu", metavar="gpu", help="GPU index to use, or 'cpu' (HARDWARE.DEVICE)")
    parser.add_argument("--seed", metavar="seed", type=int, help="seed (TRAINING.SEED)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH",
        help="continue the experiment where it stopped (its last.pth); PATH: a checkpoint or experiment directory",
    )
    parser.add_argument("--print-config", action="store_true", help="validate, print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides with dotted keys")
    return parser


def find_config_dir() -> List[str]:
    """Where ``configs/`` is looked for: the current directory, then the source tree of this package."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = [os.path.abspath("configs"), os.path.join(here, "configs")]
    return list(dict.fromkeys(dirs))


def _env_file(user: str) -> str:
    candidates = [os.path.join(d, f"env_{user}.yaml") for d in find_config_dir()]
    for path in candidates:
        if os.path.isfile(path):
            return path
    known = sorted(
        {os.path.basename(p)[4:-5] for d in find_config_dir() for p in glob.glob(os.path.join(d, "env_*.yaml"))}
    )
    near = difflib.get_close_matches(user, known, n=1)
    hint = f"did you mean -u {near[0]}? " if near else ""
    raise ConfigError(
        f"-u {user}: {candidates[0]} not found; {hint}known users: {', '.join(known) or 'none'} "
        f"(copy configs/env_example.yaml to configs/env_{user}.yaml)"
    )


def resolve_config(args: argparse.Namespace) -> Config:
    """The validated :class:`Config` of a parsed command line."""
    config_path = args.config
    env_path = _env_file(args.user) if args.user else None
    overrides = list(args.overrides or [])
    for text in overrides:
        if "=" not in text:
            raise ConfigError(
                f"unexpected argument {text!r}: overrides are KEY=VALUE with a dotted key (e.g. TRAINING.EPOCHS=3)"
            )
    shorthands = []
    if args.exp_name:
        shorthands.append(f"EXPERIMENT.NAME={args.exp_name}")
    if args.gpu is not None:
        gpu = str(args.gpu)
        shorthands.append(f"HARDWARE.DEVICE={'cpu' if gpu.lower() == 'cpu' else 'cuda:' + gpu}")
        if gpu.isdigit():
            shorthands.append(f"HARDWARE.GPU={gpu}")
    if args.seed is not None:
        shorthands.append(f"TRAINING.SEED={args.seed}")
    if config_path is None:  # the quick start is the recipe unless --config names another
        config_path = _quickstart_path()
    if config_path is None:  # configs/ not shipped: the embedded copy
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix="quickstart.yaml", delete=False) as fh:
            yaml.safe_dump(QUICKSTART, fh, sort_keys=False)
        try:
            cfg = load_config(fh.name, env_path, shorthands + overrides)
        finally:
            os.unlink(fh.name)
    else:
        cfg = load_config(config_path, env_path, shorthands + overrides)
    if cfg.EXPERIMENT.NAME is None:
        stem = os.path.splitext(os.path.basename(config_path))[0] if config_path else None
        name = stem or (f"env_{args.user}" if args.user else "default")
        cfg = dataclasses.replace(cfg, EXPERIMENT=dataclasses.replace(cfg.EXPERIMENT, NAME=name))
    return cfg


def _quickstart_path() -> Optional[str]:
    for d in find_config_dir():
        path = os.path.join(d, "quickstart.yaml")
        if os.path.isfile(path):
            return path
    return None


# ------------------------------------------------------------------------------------------------
# Building the pieces
# ------------------------------------------------------------------------------------------------
def _fail(section: str, exc: BaseException) -> ConfigError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"{section}: {msg}")


def build_data(cfg: Config):
    """``(train_set, val_set, num_classes, in_channels)`` of the ``DATA`` section."""
    from . import data as bdata

    d = cfg.DATA
    kwargs = dict(d.KWARGS)
    if d.TRAIN_SIZE is not None:
        kwargs["train_size"] = d.TRAIN_SIZE
    if d.VAL_SIZE is not None:
        kwargs["val_size"] = d.VAL_SIZE
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
    num_classes = info.get("num_classes") or kwargs.get("num_classes")
    if num_classes is None:
        num_classes = len(getattr(train_set, "classes", []) or []) or None
    return train_set, val_set, num_classes, info.get("in_channels")


def build_model(cfg: Config, num_classes: Optional[int] = None, in_channels: Optional[int] = None):
    """The float model of the ``MODEL`` section (``num_classes`` / ``in_channels`` filled from the data set
    when the model takes them and ``MODEL.KWARGS`` does not set them), with ``MODEL.CHECKPOINT`` loaded."""
    from . import models

    kwargs = dict(cfg.MODEL.KWARGS)
    try:
        accepted = models._accepted_kwargs(cfg.MODEL.NAME) if cfg.MODEL.NAME in models.list_models() else set()
        if num_classes and "num_classes" in accepted:
            kwargs.setdefault("num_classes", int(num_classes))
        if in_channels and "in_channels" in accepted and in_channels != 3:
            kwargs.setdefault("in_channels", int(in_channels))
        model = models.get_model(cfg.MODEL.NAME, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _fail("MODEL", exc) from None
    if cfg.MODEL.CHECKPOINT:
        from .engine.checkpoint import load_model_state

        load_model_state(model, cfg.resolve_path(cfg.MODEL.CHECKPOINT))
    return model


def build_teacher(cfg: Config, dist: DistillationCfg, float_model, num_classes=None):
    """The frozen float teacher: a copy of the float model, or ``DISTILLATION.TEACHER`` by name."""
    from . import models

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
        from .engine.checkpoint import load_model_state

        load_model_state(teacher, cfg.resolve_path(dist.TEACHER_CHECKPOINT))
    t_classes, s_classes = getattr(teacher, "num_classes", None), getattr(float_model, "num_classes", None)
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ConfigError(f"DISTILLATION: the teacher has {t_classes} classes but the model has {s_classes} "
                          f"(DISTILLATION.TEACHER_KWARGS.num_classes / MODEL.KWARGS.num_classes)")
    return teacher


def float_layers(cfg: Config, model) -> List[str]:
    """``MODEL.FLOAT_LAYERS``, or the model's own float layers when null."""
    if cfg.MODEL.FLOAT_LAYERS is not None:
        return list(cfg.MODEL.FLOAT_LAYERS)
    from .models import float_layer_names

    return list(float_layer_names(model, downsample=cfg.MODEL.FLOAT_DOWNSAMPLE))


def prepare(model, bcfg, layers_float: Sequence[str]):
    """``bnn.prepare_binary_model`` with a validated ``BCONFIG`` section (again on a prepared model
    for the next step of a multi-step recipe: learned binarizer parameters are kept)."""
    from . import prepare_binary_model

    kwargs = build_bconfig(bcfg, float_layers=layers_float)
    try:
        return prepare_binary_model(model, kwargs["bconfig"], custom_config_layers_name=kwargs["custom_config_layers_name"],
                                    ignore_layers_name=kwargs["ignore_layers_name"])
    except (ValueError, KeyError) as exc:
        raise _fail("BCONFIG", exc) from None


def _lr_args(lrs: LRScheduleCfg) -> Dict[str, Any]:
    name = lrs.NAME
    if name == "multistep":
        args: Dict[str, Any] = {"milestones": list(lrs.MILESTONES)}
        if lrs.GAMMAS:
            args["gammas"] = list(lrs.GAMMAS)
        else:
            args["gamma"] = lrs.GAMMA
        return args
    if name == "cosine":
        args = {"eta_min_factor": lrs.ETA_MIN_FACTOR}
    elif name == "linear":
        args = {"end_factor": lrs.END_FACTOR}
    elif name == "poly":
        return {"start_epoch": lrs.START_EPOCH, "duration_epochs": lrs.DURATION_EPOCHS, "power": lrs.POWER}
    else:
        return {}
    if lrs.TOTAL_EPOCHS is not None:
        args["total_epochs"] = lrs.TOTAL_EPOCHS
    return args


def train_config(cfg: Config, *, epochs: int, exp_dir: str, optimizer: OptimizerCfg, lr_schedule: LRScheduleCfg,
                 distillation: DistillationCfg, callbacks: List[Dict[str, Any]]):
    """The engine's :class:`~bnn.engine.config.TrainConfig` for one step of a run."""
    from .engine.config import TrainConfig

    t, o = cfg.TRAINING, optimizer
    device = cfg.HARDWARE.DEVICE
    values = dict(
        epochs=epochs,
        batch_multiplier=t.BATCH_MULTIPLIER,
        optimizer=o.NAME,
        lr=o.LR,
        momentum=o.MOMENTUM,
        nesterov=o.NESTEROV,
        betas=tuple(o.BETAS),
        eps=o.EPS,
        grad_clip=t.GRAD_CLIP,
        label_smoothing=t.LABEL_SMOOTHING,
        weight_decay=o.WEIGHT_DECAY,
        wd_latent_weights=o.LATENT_WEIGHTS.WEIGHT_DECAY,
        wd_binarizer=o.BINARIZER.WEIGHT_DECAY,
        wd_bn_bias=o.BN_BIAS.WEIGHT_DECAY,
        wd_rest=o.REST.WEIGHT_DECAY,
        lr_mult_latent_weights=o.LATENT_WEIGHTS.LR_MULT,
        lr_mult_binarizer=o.BINARIZER.LR_MULT,
        lr_mult_bn_bias=o.BN_BIAS.LR_MULT,
        lr_mult_rest=o.REST.LR_MULT,
        disable_wd_epoch=o.DISABLE_WD_EPOCH,
        lr_schedule=lr_schedule.NAME,
        lr_schedule_args=_lr_args(lr_schedule),
        warmup_epochs=lr_schedule.WARMUP_EPOCHS,
        warmup_start_factor=lr_schedule.WARMUP_START_FACTOR,
        callbacks=list(callbacks),
        distill=distillation.ENABLED,
        distill_alpha=distillation.ALPHA,
        distill_temperature=distillation.TEMPERATURE,
        device=device,
        amp=t.AMP,
        amp_dtype=t.AMP_DTYPE,
        distributed_backend=cfg.HARDWARE.DIST_BACKEND,
        exp_dir=exp_dir,
        log_interval=t.LOG_INTERVAL,
        progress_bar=cfg.EXPERIMENT.PROGRESS_BAR,
        tensorboard=cfg.EXPERIMENT.TENSORBOARD,
        plot=cfg.EXPERIMENT.PLOT,
        seed=t.SEED,
        max_steps_per_epoch=t.MAX_STEPS_PER_EPOCH,
    )
    try:
        return TrainConfig.from_dict(values)
    except ValueError as exc:
        raise _fail("config", exc) from None


@dataclass
class RunStep:
    """One training run of a recipe: its epochs, directory, BConfig to (re)apply and TrainConfig pieces."""

    name: str
    epochs: int
    exp_dir: str
    bconfig: Any  # a BConfigCfg to prepare with before the step, or None
    optimizer: OptimizerCfg
    lr_schedule: LRScheduleCfg
    distillation: DistillationCfg
    callbacks: List[Dict[str, Any]] = field(default_factory=list)
    init_from_previous: Optional[str] = None  # "last" / "best": load the previous step's checkpoint first


def _schedule_callbacks(cfg: Config, nncf_schedule=None) -> List[Dict[str, Any]]:
    s = cfg.SCHEDULE
    if nncf_schedule is not None:
        return [{"name": "staged", **dataclasses.asdict(nncf_schedule)}]
    if s.NAME in ("staged", "gradual"):  # the schema's fields are the callback's arguments, upper-cased
        section = s.STAGED if s.NAME == "staged" else s.GRADUAL
        return [{"name": s.NAME, **{key.lower(): value for key, value in dataclasses.asdict(section).items()}}]
    return []


def plan_steps(cfg: Config, exp_dir: str, nncf_schedule=None) -> List[RunStep]:
    """The runs of a recipe, in order: one, the two stages, or the ``STEPS`` of a multi-step recipe."""
    callbacks = _schedule_callbacks(cfg, nncf_schedule)
    if cfg.STEPS:
        if cfg.SCHEDULE.NAME == "two_stage":
            raise ConfigError("SCHEDULE.NAME: two_stage cannot be combined with STEPS (write the stages as two STEPS)")
        steps = []
        for i, s in enumerate(cfg.STEPS, 1):
            name = s.NAME or f"step{i}"
            sub = f"step{i}" if not s.NAME else f"step{i}_{s.NAME}"
            steps.append(RunStep(name, s.EPOCHS, os.path.join(exp_dir, sub), s.BCONFIG, s.OPTIMIZER, s.LR_SCHEDULE,
                                 s.DISTILLATION, callbacks, "last" if i > 1 else None))
        return steps
    if cfg.SCHEDULE.NAME == "two_stage":
        two = cfg.SCHEDULE.TWO_STAGE
        out = []
        for i, st in enumerate((two.STAGE1, two.STAGE2), 1):
            out.append(RunStep(f"stage{i}", st.EPOCHS, os.path.join(exp_dir, f"stage{i}"), cfg.BCONFIG if i == 1 else None,
                               st.OPTIMIZER, st.LR_SCHEDULE, st.DISTILLATION, [{"name": "two_stage", "stage": i}],
                               two.INIT_FROM if i == 2 else None))
        return out
    return [RunStep("train", cfg.TRAINING.EPOCHS, exp_dir, cfg.BCONFIG, cfg.OPTIMIZER, cfg.LR_SCHEDULE,
                    cfg.DISTILLATION, callbacks)]


def _finished(path: str, epochs: int) -> bool:
    if not os.path.exists(path):
        return False
    from .engine.checkpoint import load_checkpoint

    return int(load_checkpoint(path, map_location="cpu").get("epoch", -1)) >= epochs


def _write_config(cfg: Config, exp_dir: str) -> None:
    from .engine.distributed import is_main_process

    if not is_main_process():
        return
    os.makedirs(exp_dir, exist_ok=True)
    tmp = os.path.join(exp_dir, ".config.yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, os.path.join(exp_dir, "config.yaml"))


def run(cfg: Config, resume: Optional[str] = None, log=print):
    """Train the recipe ``cfg``; returns the engine's ``TrainResult`` of the last step.

    ``resume``: None (fresh run), ``"auto"`` (continue the experiment directory: finished steps are
    skipped, the unfinished one continues from its ``last.pth``) or a checkpoint / experiment path.
    """
    import torch

    from .data import build_loaders
    from .engine.checkpoint import load_model_state
    from .engine.distributed import init_distributed, is_distributed
    from .engine.run_dir import run_record
    from .engine.trainer import Trainer, seed_everything

    exp_dir = cfg.resolve_path(os.path.join(cfg.EXPERIMENT.DIR, cfg.EXPERIMENT.NAME or "default"))
    resume_path = None
    if resume not in (None, "auto"):
        if os.path.isdir(resume):
            exp_dir, resume = os.path.abspath(resume), "auto"
        elif not os.path.isfile(resume):
            raise ConfigError(f"--resume {resume}: no such checkpoint file or experiment directory")
        else:
            resume_path = resume

    nncf_json = None
    if cfg.NNCF_CONFIG:
        path = cfg.NNCF_CONFIG if os.path.isfile(cfg.NNCF_CONFIG) else cfg.resolve_path(cfg.NNCF_CONFIG)
        nncf_json = load_nncf_json(path)

    use_cuda = cfg.HARDWARE.DEVICE != "cpu" and torch.cuda.is_available()
    init_distributed(cfg.HARDWARE.DIST_BACKEND, use_cuda=use_cuda)
    seed_everything(cfg.TRAINING.SEED)  # the model's initial weights depend on the seed only
    train_set, val_set, num_classes, in_channels = build_data(cfg)
    train_loader, val_loader = build_loaders(
        train_set, val_set, batch_size=cfg.TRAINING.BATCH_SIZE, workers=cfg.HARDWARE.WORKERS,
        distributed=is_distributed(), seed=cfg.TRAINING.SEED, val_batch_size=cfg.TRAINING.EVAL_BATCH_SIZE,
    )
    seed_everything(cfg.TRAINING.SEED)
    model = build_model(cfg, num_classes, in_channels)
    float_model = model
    layers_float = float_layers(cfg, model)
    distilled = [s.distillation for s in plan_steps(cfg, exp_dir) if s.distillation.ENABLED]
    teacher = build_teacher(cfg, distilled[0], float_model, num_classes) if distilled else None

    nncf_schedule = None
    if nncf_json is not None:
        from .nncf_config import from_nncf_config

        try:
            model, nncf_schedule = from_nncf_config(model, nncf_json)
        except (ValueError, KeyError) as exc:
            raise _fail(f"NNCF_CONFIG {cfg.NNCF_CONFIG}", exc) from None
    steps = plan_steps(cfg, exp_dir, nncf_schedule)
    if not resume and os.path.exists(os.path.join(steps[0].exp_dir, "last.pth")):
        log(f"bnn-train: {exp_dir} holds an earlier run: starting afresh (--resume continues it instead)")
    _write_config(cfg, exp_dir)

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
        tcfg = train_config(cfg, epochs=step.epochs, exp_dir=step.exp_dir, optimizer=step.optimizer,
                            lr_schedule=step.lr_schedule, distillation=step.distillation, callbacks=step.callbacks)
        trainer = Trainer(model, train_loader, val_loader, tcfg, teacher=teacher if step.distillation.ENABLED else None,
                          run_info=run_record(cfg, i, num_classes, in_channels, nncf_json))
        if len(steps) > 1:
            log(f"bnn-train: {step.name} ({i + 1}/{len(steps)}): {step.epochs} epochs in {step.exp_dir}")
        if resume and len(steps) > 1 and i < len(steps) - 1 and _finished(last, step.epochs):
            load_model_state(model, last)  # a finished step: its final weights, not trained again
            result = trainer.load_result()
        elif resume_path is not None and i == len(steps) - 1:
            result = trainer.fit(resume=resume_path)
        else:
            result = trainer.fit(resume="auto" if resume else False)
        close = getattr(trainer, "close", None)
        if close is not None:
            close()
        previous = step
    return result


# ------------------------------------------------------------------------------------------------
def _one_line_errors():
    errors: List[type] = [ConfigError]
    try:
        from .engine.checkpoint import CheckpointError

        errors.append(CheckpointError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from .data import DatasetNotFoundError

        errors.append(DatasetNotFoundError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from .engine.trainer import NonFiniteLossError

        errors.append(NonFiniteLossError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def main(argv: Optional[Sequence[str]] = None, prog: str = "bnn-train") -> int:
    """Entry point of ``bnn-train`` (and ``recipes/run_dev.py``); returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.resume not in (None, "auto") and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.insert(0, args.resume)  # ``--resume KEY=VALUE``: a bare --resume, then an override
        args.resume = "auto"
    errors = _one_line_errors()
    try:
        cfg = resolve_config(args)
        if args.print_config:
            yaml.safe_dump(config_to_dict(cfg), sys.stdout, sort_keys=False)
            return 0
        result = run(cfg, resume=args.resume)
    except errors as exc:
        if os.environ.get("BNN_DEBUG"):
            raise
        print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    from .engine.distributed import is_main_process

    if result is not None and result.exp_dir and is_main_process():
        top1 = result.best_top1
        print(f"{prog}: best top-1 {top1:.2f}% at epoch {result.best_epoch}; results in {result.exp_dir}")
    return 0


if __name__ == "__main__":  # torchrun ... -m bnn.cli
    sys.exit(main())
