"""The training engine: recipes, the :class:`Trainer`, schedules, checkpoints, distribution.

* :mod:`bnn.engine.schema` - :class:`Config`, the one config model: nested dataclasses the YAML fills and
  the :class:`Trainer` reads, with the one set of defaults; :func:`load_config` (YAML files and ``KEY=VALUE``
  overrides), :meth:`Config.from_dict` and :meth:`Config.replace` (Python, the same validation and errors),
  :func:`load_run_config`.
* :mod:`bnn.engine.steps` - :func:`train`, the one driver of a recipe's steps (``bnn-train`` and Python),
  and the builders evaluation shares with training: :func:`build_model`, :func:`build_val_loader`.
* :mod:`bnn.engine.trainer` - :class:`Trainer` (epochs, AMP on CUDA, gradient accumulation,
  top-1/top-5, distillation, checkpoints, resume), :class:`TrainResult`, :class:`NonFiniteLossError`.
* :mod:`bnn.engine.optim` - Adam/AdamW/SGD with parameter groups (latent binary weights,
  binarizer parameters, BN and bias, the rest).
* :mod:`bnn.engine.lr_schedule` - constant, multistep, cosine, linear, poly drop, warmup.
* :mod:`bnn.engine.binarization_schedule` - the :class:`Callback` contract and the staged (NNCF),
  two-stage (ReActNet) and gradual binarization schedules.
* :mod:`bnn.engine.distill` - KL distillation loss (ReActNet).
* :mod:`bnn.engine.checkpoint` - atomic save through iopath, one-line errors, what a checkpoint records.
* :mod:`bnn.engine.run_dir` - a run's checkpoints standing alone: :func:`bnn.load_trained`.
* :mod:`bnn.engine.evaluate` - top-k accuracy over a loader (validation and ``bnn-eval``).
* :mod:`bnn.engine.reporting` - the start banner, throughput, log file, ``metrics.csv``, TensorBoard, ``curves.png``.
* :mod:`bnn.engine.distributed` - torchrun + DDP helpers.
"""
from .binarization_schedule import Callback, GradualBinarizationSchedule, StagedBinarizationSchedule, TwoStageSchedule
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from .distill import DistillationLoss
from .reporting import plot_metrics, read_metrics
from .schema import Config, ConfigError, load_config, load_run_config
from .steps import build_model, build_val_loader, train
from .trainer import NonFiniteLossError, Trainer, TrainResult, seed_everything

__all__ = [
    "Config", "ConfigError", "load_config", "load_run_config",
    "train", "build_model", "build_val_loader",
    "Trainer", "TrainResult", "NonFiniteLossError", "seed_everything",
    "Callback", "StagedBinarizationSchedule", "TwoStageSchedule", "GradualBinarizationSchedule",
    "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model_state",
    "DistillationLoss", "read_metrics", "plot_metrics",
]
