"""A ``bnn-train`` run's checkpoints, standing alone: what they record of the recipe and how the
trained model is rebuilt from them (:func:`load_trained`).

A run writes ``best.pth`` and ``last.pth`` to its folder (a multi-step or two-stage run: to one
sub-folder per step, the last step's holding the final model). Besides the training state, each
checkpoint's ``meta`` holds (:func:`run_record`, on top of
:func:`bnn.engine.checkpoint.environment_info` and the seed)::

    "recipe": the resolved config (the run's config.yaml), "step": index of the recipe step,
    "data": {"name", "num_classes", "in_channels"}, "model": {"name", "kwargs"},
    "nncf": the NNCF JSON when the run was driven by one

so the prepared model is rebuilt exactly as ``bnn-train`` built it (float model from ``MODEL``,
``BCONFIG`` of every step up to this one through :func:`bnn.prepare_binary_model`) without the
run's ``config.yaml`` or any file the recipe named, and its weights loaded. A checkpoint written
before this record existed is rebuilt from the ``config.yaml`` next to it.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Any, Dict, Optional

import torch.nn as nn

from .checkpoint import CheckpointError, load_checkpoint, load_model_state
from .schema import Config, ConfigError, config_from_record, config_to_dict

__all__ = ["TrainedRun", "run_record", "find_checkpoint", "load_run", "load_trained", "validation_loader",
           "RUN_ERRORS"]

CHECKPOINT_NAMES = ("best", "last")


def _errors() -> tuple:
    from ..data import DatasetNotFoundError

    return (ConfigError, CheckpointError, DatasetNotFoundError)


#: the errors a run's folder can raise, each with a one-line message (the commands print them)
RUN_ERRORS = _errors()


def run_record(cfg: Config, step: int, num_classes: Optional[int], in_channels: Optional[int],
               nncf: Optional[dict] = None) -> Dict[str, Any]:
    """The part of a checkpoint's ``meta`` that rebuilds its model (see the module docstring)."""
    return {
        "recipe": config_to_dict(cfg),
        "step": int(step),
        "data": {"name": cfg.DATA.NAME, "num_classes": num_classes, "in_channels": in_channels},
        "model": {"name": cfg.MODEL.NAME, "kwargs": dict(cfg.MODEL.KWARGS)},
        "nncf": nncf,
    }


def _natural(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def find_checkpoint(run: str, which: str = "best") -> str:
    """``run`` itself when it is a file; ``run/<which>.pth``; else that of the run's last step folder."""
    from ..hints import did_you_mean

    if which not in CHECKPOINT_NAMES:
        raise ConfigError(f"which={which!r}: must be one of {', '.join(CHECKPOINT_NAMES)}{did_you_mean(which, CHECKPOINT_NAMES)}")
    run = str(run)
    if os.path.isfile(run):
        return run
    if not os.path.isdir(run):
        raise CheckpointError(f"{run}: no such run folder or checkpoint file")
    direct = os.path.join(run, f"{which}.pth")
    if os.path.isfile(direct):
        return direct
    steps = sorted(glob.glob(os.path.join(run, "*", f"{which}.pth")), key=_natural)
    if steps:
        return steps[-1]
    other = [n for n in CHECKPOINT_NAMES if n != which and os.path.isfile(os.path.join(run, f"{n}.pth"))]
    hint = f" (it has {other[0]}.pth: which={other[0]!r})" if other else ""
    raise CheckpointError(f"{run}: no {which}.pth in the run folder or its step folders{hint}")


def _record_without_meta(path: str) -> Dict[str, Any]:
    """The record of a checkpoint written before checkpoints held one: from the config.yaml beside it
    (or, for a step of a multi-step run, in the run folder above it)."""
    from .schema import load_run_config

    folder = os.path.dirname(os.path.abspath(path))
    run = folder if os.path.isfile(os.path.join(folder, "config.yaml")) else os.path.dirname(folder)
    if not os.path.isfile(os.path.join(run, "config.yaml")):
        raise CheckpointError(f"checkpoint {path} records no recipe and has no config.yaml beside it")
    cfg = load_run_config(run)
    steps = sorted(glob.glob(os.path.join(run, "*", os.path.basename(path))), key=_natural)
    step = steps.index(os.path.abspath(path)) if run != folder and os.path.abspath(path) in steps else 0
    return run_record(cfg, step, None, None)


def rebuild_model(cfg: Config, record: Dict[str, Any]) -> nn.Module:
    """The prepared (not yet trained) model of step ``record["step"]`` of the recipe ``cfg``, built by
    the functions ``bnn-train`` builds it with (:mod:`bnn.engine.steps`); the float starting weights
    (``MODEL.CHECKPOINT``) are not read."""
    from . import steps

    data = record.get("data", {})
    num_classes, in_channels = data.get("num_classes"), data.get("in_channels")
    plan = steps.plan_steps(cfg, "")
    if record.get("nncf"):
        from ..nncf_config import from_nncf_config

        model = steps.build_float_model(cfg, num_classes, in_channels, load_checkpoint=False)
        return from_nncf_config(model, record["nncf"])[0]
    step = int(record.get("step", len(plan) - 1))
    if step >= len(plan) - 1:
        return steps.build_model(cfg, num_classes, in_channels)
    model = steps.build_float_model(cfg, num_classes, in_channels, load_checkpoint=False)  # an earlier step's model
    layers_float = steps.float_layers(cfg, model)
    for planned in plan[: step + 1]:
        if planned.bconfig is not None:
            model = steps.prepare(model, planned.bconfig, layers_float)
    return model


@dataclasses.dataclass
class TrainedRun:
    """A run's checkpoint loaded: the model (eval mode), its recipe and what the checkpoint recorded."""

    model: nn.Module
    config: Config
    checkpoint: str
    epoch: int
    meta: Dict[str, Any]
    history: list

    def recorded_top1(self) -> Optional[float]:
        """The validation top-1 the run recorded for this checkpoint's epoch (None when not validated)."""
        for row in self.history:
            if int(row.get("epoch", -1)) == self.epoch and "val_top1" in row:
                return float(row["val_top1"])
        return None


def load_run(run: str, which: str = "best", device: Any = "cpu") -> TrainedRun:
    """Load the ``which`` checkpoint of the run folder (or checkpoint file) ``run``; see :func:`load_trained`."""
    path = find_checkpoint(run, which)
    state = load_checkpoint(path, map_location=device)
    if "model" not in state:
        raise CheckpointError(f"checkpoint {path} holds no model weights (not a bnn-train checkpoint)")
    meta = dict(state.get("meta") or {})
    record = meta if "recipe" in meta else {**meta, **_record_without_meta(path)}
    cfg = config_from_record(record["recipe"], f"{path} (recorded recipe)")
    model = rebuild_model(cfg, record)
    load_model_state(model, state, path=path)
    model.to(device).eval()
    return TrainedRun(model, cfg, path, int(state.get("epoch", 0)), record, list(state.get("history", [])))


def load_trained(run_dir: str, which: str = "best", device: Any = "cpu") -> nn.Module:
    """The trained model of a ``bnn-train`` run, prepared (fake-binarized) as in training, in eval mode.

    ``run_dir``: the run's folder (``EXPERIMENT.DIR/EXPERIMENT.NAME``; for a multi-step run the last
    step's checkpoint is taken) or a checkpoint file. ``which``: ``"best"`` (highest validation top-1)
    or ``"last"``. ``device``: where the model is loaded. The model is rebuilt from the recipe recorded
    in the checkpoint and its weights loaded; pack it for inference with :func:`bnn.pack_binary_model`.
    Errors are one line
    (:class:`~bnn.engine.checkpoint.CheckpointError`, :class:`~bnn.engine.schema.ConfigError`).
    """
    return load_run(run_dir, which, device).model


def validation_loader(cfg: Config, batch_size: Optional[int] = None, workers: Optional[int] = None):
    """The validation loader of the recipe ``cfg`` as training builds it, with another batch size or
    number of worker processes when given."""
    from .steps import build_val_loader

    if batch_size is not None:
        cfg = dataclasses.replace(cfg, TRAINING=dataclasses.replace(cfg.TRAINING, EVAL_BATCH_SIZE=int(batch_size)))
    if workers is not None:
        cfg = dataclasses.replace(cfg, HARDWARE=dataclasses.replace(cfg.HARDWARE, WORKERS=int(workers)))
    return build_val_loader(cfg)
