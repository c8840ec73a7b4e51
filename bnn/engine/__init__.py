"""The training engine: :class:`Trainer`, :class:`TrainConfig`, schedules, checkpoints, distribution.

* :mod:`bnn.engine.config` - :class:`TrainConfig`, the plain dataclass of a run's settings.
* :mod:`bnn.engine.trainer` - :class:`Trainer` (epochs, AMP on CUDA, gradient accumulation,
  top-1/top-5, distillation, checkpoints, resume), :class:`TrainResult`, :class:`NonFiniteLossError`.
* :mod:`bnn.engine.optim` - Adam/AdamW/SGD with parameter groups (latent binary weights,
  binarizer parameters, BN and bias, the rest).
* :mod:`bnn.engine.lr_schedule` - constant, multistep with gammas, cosine, linear, poly drop, warmup.
* :mod:`bnn.engine.binarization_schedule` - staged (seed 000), two-stage (seed 003) and gradual
  (seed 004) callbacks, :func:`build_callbacks` by name.
* :mod:`bnn.engine.distill` - KL distillation loss (ReActNet).
* :mod:`bnn.engine.checkpoint` - atomic save through iopath, one-line errors.
* :mod:`bnn.engine.reporting` - log file, ``metrics.csv``, TensorBoard, ``curves.png``.
* :mod:`bnn.engine.distributed` - torchrun + DDP helpers.
"""
from .binarization_schedule import (CALLBACKS, Callback, GradualBinarizationSchedule, StagedBinarizationSchedule,
                                    TwoStageSchedule, build_callback, build_callbacks, train_two_stage,
                                    two_stage_configs)
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig
from .distill import DistillationLoss, kl_div_logits
from .distributed import find_free_port, init_distributed, is_main_process
from .lr_schedule import LR_SCHEDULES, build_lr_scheduler, make_lr_factor
from .optim import GROUP_NAMES, OPTIMIZERS, build_optimizer, classify_parameters, param_groups
from .reporting import plot_metrics, read_metrics
from .trainer import NonFiniteLossError, Trainer, TrainResult, seed_everything, topk_correct

__all__ = [
    "Trainer", "TrainConfig", "TrainResult", "NonFiniteLossError", "seed_everything", "topk_correct",
    "Callback", "StagedBinarizationSchedule", "TwoStageSchedule", "GradualBinarizationSchedule", "CALLBACKS",
    "build_callback", "build_callbacks", "two_stage_configs", "train_two_stage",
    "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model_state",
    "DistillationLoss", "kl_div_logits",
    "init_distributed", "is_main_process", "find_free_port",
    "LR_SCHEDULES", "make_lr_factor", "build_lr_scheduler",
    "GROUP_NAMES", "OPTIMIZERS", "build_optimizer", "classify_parameters", "param_groups",
    "read_metrics", "plot_metrics",
]
