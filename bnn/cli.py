"""``bnn-train``: train a binary network from a YAML recipe (also ``recipes/run_dev.py``'s command line).

::

    bnn-train                                              # the quick start (bnn/configs/quickstart.yaml)
    bnn-train --config configs/cifar10_xnor_resnet18.yaml TRAINING.EPOCHS=3 DATA.DOWNLOAD=true
    bnn-train -u dima --exp_name try1 --gpu 0 --seed 1     # configs/env_dima.yaml on top of the recipe
    bnn-train --exp_name try1 --resume TRAINING.EPOCHS=20  # continue a run from its own config.yaml
    torchrun --nproc_per_node=4 -m bnn.cli --config ...    # several GPUs (or Gloo processes on CPU)

The config is layered (:mod:`bnn.engine.schema`): schema defaults < ``--config`` < ``-u USER``'s
``configs/env_USER.yaml`` < ``KEY=VALUE`` overrides; ``--exp_name``, ``--gpu`` and ``--seed`` are
shorthands for ``EXPERIMENT.NAME``, ``HARDWARE.DEVICE`` and ``TRAINING.SEED``. Any bad input (a config
typo, a missing data root or GPU, a corrupted or mismatched checkpoint, a NaN loss) ends the run with one
line on stderr and exit status 2 (``BNN_DEBUG=1`` shows the traceback instead).

A run writes to ``EXPERIMENT.DIR/EXPERIMENT.NAME`` (see :func:`bnn.engine.train`). A new run never
touches an earlier run's files: it refuses a folder holding one unless ``--overwrite`` (which deletes the
earlier run first). ``--resume`` continues a run from its saved ``config.yaml`` with only the overrides
given, prints the settings that differ and refuses the ones that would break its schedule.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import List, Optional, Sequence

import yaml

from .data import DatasetNotFoundError
from .engine.checkpoint import CheckpointError
from .engine.distributed import is_main_process
from .engine.schema import Config, ConfigError, config_to_dict, load_config
from .engine.steps import check_model_kwargs, resume_config, train
from .engine.trainer import NonFiniteLossError
from .hints import did_you_mean

__all__ = ["main", "build_parser", "resolve_config", "QUICKSTART"]

#: The quick start's recipe, shipped as package data: ``bnn-train`` with no ``--config`` trains it.
QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "quickstart.yaml")

# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def build_parser(prog: str = "bnn-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="PyTorch Binary Network Training. With no arguments: the quick start.",
        epilog="Overrides: trailing KEY=VALUE with dotted keys of the config schema, e.g. "
        "TRAINING.EPOCHS=3 OPTIMIZER.LR=0.01 MODEL.KWARGS.width=32 STEPS.0.EPOCHS=2.",
    )
    parser.add_argument("--config", metavar="PATH", help="recipe YAML (default: the quick start, bnn/configs/quickstart.yaml)")
    parser.add_argument("-u", "--user", metavar="USER", help="read configs/env_USER.yaml (layered on top of --config)")
    parser.add_argument("--exp_name", metavar="exp_name", help="experiment name (EXPERIMENT.NAME)")
    parser.add_argument("--gpu", metavar="gpu", help="GPU index to use, or 'cpu' (HARDWARE.DEVICE)")
    parser.add_argument("--seed", metavar="seed", type=int, help="seed (TRAINING.SEED)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH",
        help="continue the run where it stopped, from its config.yaml and last.pth; PATH: a checkpoint or run directory",
    )
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier run in the run directory first")
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
    hint = did_you_mean(user, [f"-u {k}" for k in known], list_all=False) if known else ""
    raise ConfigError(
        f"-u {user}: {candidates[0]} not found{hint}; known users: {', '.join(known) or 'none'} "
        f"(copy configs/env_example.yaml to configs/env_{user}.yaml)"
    )


def shorthand_overrides(args: argparse.Namespace) -> List[str]:
    """``--exp_name``, ``--gpu``, ``--seed`` and the trailing ``KEY=VALUE`` overrides, as overrides."""
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
    return shorthands + overrides


def resolve_config(args: argparse.Namespace) -> Config:
    """The validated :class:`Config` of a parsed command line (the quick start unless ``--config``)."""
    config_path = args.config or QUICKSTART
    env_path = _env_file(args.user) if args.user else None
    cfg = load_config(config_path, env_path, shorthand_overrides(args))
    if cfg.EXPERIMENT.NAME is None:
        name = os.path.splitext(os.path.basename(config_path))[0]
        cfg = load_config(config_path, env_path, [f"EXPERIMENT.NAME={name}"] + shorthand_overrides(args))
    return cfg


def main(argv: Optional[Sequence[str]] = None, prog: str = "bnn-train") -> int:
    """Entry point of ``bnn-train`` (and ``recipes/run_dev.py``); returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.resume not in (None, "auto") and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.insert(0, args.resume)  # ``--resume KEY=VALUE``: a bare --resume, then an override
        args.resume = "auto"
    try:
        cfg = resolve_config(args)
        notes = []  # what resume_config says, for the console and train.log
        if args.resume:
            show = (lambda msg: print(msg, file=sys.stderr)) if args.print_config else print  # stdout: the YAML
            cfg = resume_config(cfg, args.resume, shorthand_overrides(args), log=lambda msg: (show(msg), notes.append(msg)))
        check_model_kwargs(cfg)
        if args.print_config:
            yaml.safe_dump(config_to_dict(cfg), sys.stdout, sort_keys=False)
            return 0
        result = train(cfg, resume=args.resume, overwrite=args.overwrite, notes=notes)
    except (ConfigError, CheckpointError, DatasetNotFoundError, NonFiniteLossError) as exc:
        if os.environ.get("BNN_DEBUG"):
            raise
        print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    if result is not None and result.exp_dir and is_main_process():
        top1 = result.best_top1
        print(f"{prog}: best top-1 {top1:.2f}% at epoch {result.best_epoch}; results in {result.exp_dir}")
    return 0


if __name__ == "__main__":  # torchrun ... -m bnn.cli
    sys.exit(main())
