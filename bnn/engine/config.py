"""``TrainConfig``: the flat settings of one :class:`bnn.engine.Trainer` run, a view of the recipe schema.

There is one set of defaults, the schema's (:mod:`bnn.engine.schema`): every default here is read from
``Config()``, so ``TrainConfig(weight_decay=1e-5)`` and ``OPTIMIZER: {WEIGHT_DECAY: 1e-5}`` train the same
(no weight decay on latent binary weights, binarizer parameters, BN and biases unless set). A recipe
becomes the TrainConfig of each of its steps with :meth:`TrainConfig.from_recipe`; the Trainer also
takes a schema :class:`~bnn.engine.schema.Config` directly::

    TrainConfig(epochs=90, lr=1e-3, weight_decay=1e-5, lr_schedule="poly",
                lr_schedule_args={"start_epoch": 60, "duration_epochs": 30}, disable_wd_epoch=60,
                callbacks=[{"name": "staged", "activations_bin_start_epoch": 10, "weights_bin_start_epoch": 30}])

``TrainConfig.from_dict`` rejects unknown keys with the closest valid one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..hints import did_you_mean
from .schema import Config, DistillationCfg, LRScheduleCfg, OptimizerCfg

__all__ = ["TrainConfig", "lr_schedule_args", "nncf_train_settings"]

_D = Config()  # the schema's defaults: the one set


def lr_schedule_args(lrs: LRScheduleCfg) -> Dict[str, Any]:
    """The keyword arguments of :func:`bnn.engine.lr_schedule.make_lr_factor` for an ``LR_SCHEDULE`` section."""
    name = lrs.NAME
    if name == "multistep":
        args: Dict[str, Any] = {"milestones": list(lrs.MILESTONES)}
        if lrs.GAMMAS:
            args["gammas"] = list(lrs.GAMMAS)
        else:
            args["gamma"] = lrs.GAMMA
        return args
    if name == "poly":
        return {"start_epoch": lrs.START_EPOCH or 0.0, "duration_epochs": lrs.DURATION_EPOCHS, "power": lrs.POWER}
    if name == "cosine":
        args = {"eta_min_factor": lrs.ETA_MIN_FACTOR}
    elif name == "linear":
        args = {"end_factor": lrs.END_FACTOR}
    else:
        return {}
    if lrs.TOTAL_EPOCHS is not None:
        args["total_epochs"] = lrs.TOTAL_EPOCHS
    return args


def nncf_train_settings(schedule: Any) -> Dict[str, Any]:
    """The :class:`TrainConfig` fields of NNCF's staged schedule (a ``bnn.NNCFSchedule`` from
    ``bnn.from_nncf_config``): the ``poly`` LR drop, the weight-decay stop, the gradient accumulation and
    the ``staged`` callback switching the binarizers on. ``TrainConfig(epochs=90, lr=1e-3, **nncf_train_settings(s))``."""
    return {
        "lr_schedule": "poly",
        "lr_schedule_args": {"start_epoch": schedule.lr_poly_drop_start_epoch,
                             "duration_epochs": schedule.lr_poly_drop_duration_epochs},
        "disable_wd_epoch": schedule.disable_wd_start_epoch,
        "batch_multiplier": schedule.batch_multiplier,
        "callbacks": [{"name": "staged", "activations_bin_start_epoch": schedule.activations_bin_start_epoch,
                       "weights_bin_start_epoch": schedule.weights_bin_start_epoch}],
    }


@dataclass
class TrainConfig:
    """Settings of one training run (see :class:`bnn.engine.Trainer`).

    Optimization
        ``epochs``: number of epochs. ``batch_multiplier``: gradients of this many
        loader batches are accumulated (each loss divided by it) before one
        optimizer step (NNCF's ``batch_multiplier``).
        ``optimizer``: ``"adam"``, ``"adamw"`` or ``"sgd"``; ``lr``; ``momentum``
        and ``nesterov`` (SGD); ``betas`` and ``eps`` (Adam/AdamW).
        ``grad_clip``: max global grad norm, ``None`` for none.
        ``label_smoothing``: of the cross-entropy.
    Weight decay per parameter group (see :mod:`bnn.engine.optim`)
        ``weight_decay`` is the default; ``wd_latent_weights``, ``wd_binarizer``,
        ``wd_bn_bias``, ``wd_rest`` override it for a group (``None``: use
        ``weight_decay``; by default the first three are 0). ``lr_mult_*``: learning-rate factor per group.
        ``disable_wd_epoch``: weight decay is 0 in every group from this epoch on.
    Learning rate schedule (see :mod:`bnn.engine.lr_schedule`)
        ``lr_schedule``: ``"constant"``, ``"multistep"`` (args ``milestones``,
        ``gammas`` or ``gamma``), ``"cosine"`` (``eta_min_factor``), ``"linear"``
        (``end_factor``), ``"poly"`` (``start_epoch``, ``duration_epochs``,
        ``power=2.1``); ``lr_schedule_args`` holds the args. ``warmup_epochs``
        (fractional allowed) ramps the factor linearly from
        ``warmup_start_factor`` to 1. All are evaluated per optimizer step at the
        fractional epoch.
    Binarization schedule callbacks
        ``callbacks``: list of ``{"name": "staged"|"two_stage"|"gradual", **args}``
        built by :func:`bnn.engine.binarization_schedule.build_callbacks` (callbacks passed to the
        Trainer directly are added to these).
    Distillation (ReActNet, Liu et al. 2020)
        ``distill``: use the teacher given to the Trainer; ``distill_alpha``: weight
        of the KL term (1.0 = pure distributional loss as in ReActNet);
        ``distill_temperature``.
    Hardware
        ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``. ``amp``: mixed precision (only on CUDA, ignored on CPU);
        ``amp_dtype``: ``"float16"`` (with GradScaler) or ``"bfloat16"``.
        ``distributed_backend``: ``None`` (auto: NCCL on GPU, Gloo on CPU) when
        started by ``torchrun``.
    Output
        ``exp_dir``: log file ``train.log``, ``metrics.csv``, TensorBoard events,
        ``curves.png`` and, unless ``checkpoint_dir`` is given, the checkpoints
        ``last.pth`` and ``best.pth``. ``resume``: ``None`` (fresh run),
        ``"auto"`` (``last.pth`` when it exists) or a checkpoint path.
        ``log_interval``: steps between progress-bar/log updates.
        ``progress_bar``, ``tensorboard``, ``plot``: switches.
        ``seed``: seeds python, numpy and torch at the start of a fresh run
        (``None``: leave the RNGs alone). ``max_steps_per_epoch``: cut epochs
        short (debugging). ``topk``: accuracies reported.
    """

    epochs: int = _D.TRAINING.EPOCHS
    batch_multiplier: int = _D.TRAINING.BATCH_MULTIPLIER
    optimizer: str = _D.OPTIMIZER.NAME
    lr: float = _D.OPTIMIZER.LR
    momentum: float = _D.OPTIMIZER.MOMENTUM
    nesterov: bool = _D.OPTIMIZER.NESTEROV
    betas: Tuple[float, float] = tuple(_D.OPTIMIZER.BETAS)
    eps: float = _D.OPTIMIZER.EPS
    grad_clip: Optional[float] = _D.TRAINING.GRAD_CLIP
    label_smoothing: float = _D.TRAINING.LABEL_SMOOTHING

    weight_decay: float = _D.OPTIMIZER.WEIGHT_DECAY
    wd_latent_weights: Optional[float] = _D.OPTIMIZER.LATENT_WEIGHTS.WEIGHT_DECAY
    wd_binarizer: Optional[float] = _D.OPTIMIZER.BINARIZER.WEIGHT_DECAY
    wd_bn_bias: Optional[float] = _D.OPTIMIZER.BN_BIAS.WEIGHT_DECAY
    wd_rest: Optional[float] = _D.OPTIMIZER.REST.WEIGHT_DECAY
    lr_mult_latent_weights: float = _D.OPTIMIZER.LATENT_WEIGHTS.LR_MULT
    lr_mult_binarizer: float = _D.OPTIMIZER.BINARIZER.LR_MULT
    lr_mult_bn_bias: float = _D.OPTIMIZER.BN_BIAS.LR_MULT
    lr_mult_rest: float = _D.OPTIMIZER.REST.LR_MULT
    disable_wd_epoch: Optional[int] = _D.OPTIMIZER.DISABLE_WD_EPOCH

    lr_schedule: str = _D.LR_SCHEDULE.NAME
    lr_schedule_args: Dict[str, Any] = field(default_factory=dict)  # the schedule function's defaults
    warmup_epochs: float = _D.LR_SCHEDULE.WARMUP_EPOCHS
    warmup_start_factor: float = _D.LR_SCHEDULE.WARMUP_START_FACTOR

    callbacks: List[Dict[str, Any]] = field(default_factory=list)

    distill: bool = _D.DISTILLATION.ENABLED
    distill_alpha: float = _D.DISTILLATION.ALPHA
    distill_temperature: float = _D.DISTILLATION.TEMPERATURE

    device: str = _D.HARDWARE.DEVICE
    amp: bool = _D.TRAINING.AMP
    amp_dtype: str = _D.TRAINING.AMP_DTYPE
    distributed_backend: Optional[str] = _D.HARDWARE.DIST_BACKEND

    exp_dir: str = "experiments/default"
    checkpoint_dir: Optional[str] = None
    resume: Optional[str] = None
    log_interval: int = _D.TRAINING.LOG_INTERVAL
    progress_bar: bool = _D.EXPERIMENT.PROGRESS_BAR
    tensorboard: bool = _D.EXPERIMENT.TENSORBOARD
    plot: bool = _D.EXPERIMENT.PLOT
    seed: Optional[int] = _D.TRAINING.SEED
    max_steps_per_epoch: Optional[int] = _D.TRAINING.MAX_STEPS_PER_EPOCH
    topk: Tuple[int, ...] = (1, 5)

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ValueError(f"TrainConfig.epochs must be >= 0, got {self.epochs}")
        if int(self.batch_multiplier) < 1:
            raise ValueError(f"TrainConfig.batch_multiplier must be >= 1, got {self.batch_multiplier}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"TrainConfig.amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        self.betas = tuple(self.betas)
        self.topk = tuple(int(k) for k in self.topk)

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; an unknown key is a ``ValueError`` naming it and the closest field."""
        names = cls.field_names()
        for key in values:
            if key not in names:
                raise ValueError(f"unknown TrainConfig key {key!r}" + did_you_mean(key, names, list_all=False))
        return cls(**dict(values))

    @classmethod
    def from_recipe(cls, cfg: Config, *, optimizer: Optional[OptimizerCfg] = None,
                    lr_schedule: Optional[LRScheduleCfg] = None, distillation: Optional[DistillationCfg] = None,
                    epochs: Optional[int] = None, exp_dir: Optional[str] = None,
                    callbacks: Optional[List[Dict[str, Any]]] = None) -> "TrainConfig":
        """The settings of one step of the recipe ``cfg`` (the step's own ``OPTIMIZER`` / ``LR_SCHEDULE`` /
        ``DISTILLATION`` sections and epochs where given, else the recipe's top-level ones)."""
        t, o = cfg.TRAINING, optimizer or cfg.OPTIMIZER
        lrs, dist = lr_schedule or cfg.LR_SCHEDULE, distillation or cfg.DISTILLATION
        if exp_dir is None:
            import os

            exp_dir = cfg.resolve_path(os.path.join(cfg.EXPERIMENT.DIR, cfg.EXPERIMENT.NAME or "default"))
        return cls(
            epochs=t.EPOCHS if epochs is None else epochs, batch_multiplier=t.BATCH_MULTIPLIER,
            optimizer=o.NAME, lr=o.LR, momentum=o.MOMENTUM, nesterov=o.NESTEROV, betas=tuple(o.BETAS), eps=o.EPS,
            grad_clip=t.GRAD_CLIP, label_smoothing=t.LABEL_SMOOTHING,
            weight_decay=o.WEIGHT_DECAY, wd_latent_weights=o.LATENT_WEIGHTS.WEIGHT_DECAY,
            wd_binarizer=o.BINARIZER.WEIGHT_DECAY, wd_bn_bias=o.BN_BIAS.WEIGHT_DECAY, wd_rest=o.REST.WEIGHT_DECAY,
            lr_mult_latent_weights=o.LATENT_WEIGHTS.LR_MULT, lr_mult_binarizer=o.BINARIZER.LR_MULT,
            lr_mult_bn_bias=o.BN_BIAS.LR_MULT, lr_mult_rest=o.REST.LR_MULT, disable_wd_epoch=o.DISABLE_WD_EPOCH,
            lr_schedule=lrs.NAME, lr_schedule_args=lr_schedule_args(lrs), warmup_epochs=lrs.WARMUP_EPOCHS,
            warmup_start_factor=lrs.WARMUP_START_FACTOR, callbacks=list(callbacks or []),
            distill=dist.ENABLED, distill_alpha=dist.ALPHA, distill_temperature=dist.TEMPERATURE,
            device=cfg.HARDWARE.DEVICE, amp=t.AMP, amp_dtype=t.AMP_DTYPE, distributed_backend=cfg.HARDWARE.DIST_BACKEND,
            exp_dir=exp_dir, log_interval=t.LOG_INTERVAL, progress_bar=cfg.EXPERIMENT.PROGRESS_BAR,
            tensorboard=cfg.EXPERIMENT.TENSORBOARD, plot=cfg.EXPERIMENT.PLOT, seed=t.SEED,
            max_steps_per_epoch=t.MAX_STEPS_PER_EPOCH,
        )

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (unknown keys rejected as in :meth:`from_dict`)."""
        values = self.to_dict()
        values.update(changes)
        return type(self).from_dict(values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
