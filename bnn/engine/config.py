"""``TrainConfig``: the plain, typed settings of :class:`bnn.engine.Trainer`.

Every field has a default, so ``TrainConfig()`` is a valid (short, CPU-friendly)
run; recipes override what they need, e.g.::

    TrainConfig(epochs=90, optimizer="adam", lr=1e-3, weight_decay=1e-5,
                wd_latent_weights=0.0, lr_schedule="constant",
                callbacks=[{"name": "staged", "activations_bin_start_epoch": 10,
                            "weights_bin_start_epoch": 30,
                            "lr_poly_drop_start_epoch": 60,
                            "lr_poly_drop_duration_epochs": 30,
                            "disable_wd_start_epoch": 60}])

``TrainConfig.from_dict`` rejects unknown keys with the closest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Settings of one training run (see :class:`bnn.engine.Trainer`).

    Optimization
        ``epochs``: number of epochs. ``batch_multiplier``: gradients of this many
        loader batches are accumulated (each loss divided by it) before one
        optimizer step (seed 000's ``batch_multiplier``).
        ``optimizer``: ``"adam"``, ``"adamw"`` or ``"sgd"``; ``lr``; ``momentum``
        and ``nesterov`` (SGD); ``betas`` and ``eps`` (Adam/AdamW).
        ``grad_clip``: max global grad norm, ``None`` for none.
        ``label_smoothing``: of the cross-entropy.
    Weight decay per parameter group (see :mod:`bnn.engine.optim`)
        ``weight_decay`` is the default; ``wd_latent_weights``, ``wd_binarizer``,
        ``wd_bn_bias``, ``wd_rest`` override it for a group (``None``: use
        ``weight_decay``). ``lr_mult_*``: learning-rate factor per group.
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
        built by :func:`bnn.engine.build_callbacks` (callbacks passed to the
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

    epochs: int = 10
    batch_multiplier: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: Optional[float] = None
    label_smoothing: float = 0.0

    weight_decay: float = 0.0
    wd_latent_weights: Optional[float] = None
    wd_binarizer: Optional[float] = None
    wd_bn_bias: Optional[float] = None
    wd_rest: Optional[float] = None
    lr_mult_latent_weights: float = 1.0
    lr_mult_binarizer: float = 1.0
    lr_mult_bn_bias: float = 1.0
    lr_mult_rest: float = 1.0
    disable_wd_epoch: Optional[int] = None

    lr_schedule: str = "constant"
    lr_schedule_args: Dict[str, Any] = field(default_factory=dict)
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0

    callbacks: List[Dict[str, Any]] = field(default_factory=list)

    distill: bool = False
    distill_alpha: float = 1.0
    distill_temperature: float = 1.0

    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"
    distributed_backend: Optional[str] = None

    exp_dir: str = "experiments/default"
    checkpoint_dir: Optional[str] = None
    resume: Optional[str] = None
    log_interval: int = 20
    progress_bar: bool = True
    tensorboard: bool = True
    plot: bool = True
    seed: Optional[int] = 0
    max_steps_per_epoch: Optional[int] = None
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
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown TrainConfig key '{key}'{hint}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (unknown keys rejected as in :meth:`from_dict`)."""
        values = self.to_dict()
        values.update(changes)
        return type(self).from_dict(values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
