"""The training loop: :class:`Trainer` and its result :class:`TrainResult`.

::

    from bnn.engine import Config, Trainer
    cfg = Config.from_dict({"TRAINING": {"EPOCHS": 30}, "OPTIMIZER": {"LR": 1e-3, "WEIGHT_DECAY": 1e-5},
                            "LR_SCHEDULE": {"NAME": "cosine"}, "EXPERIMENT": {"NAME": "xnor"}})
    result = Trainer(model, train_loader, val_loader, cfg).fit()   # writes experiments/xnor
    print(result.best_top1, result.best_checkpoint)

The Trainer reads its settings from the sections of the recipe :class:`~bnn.engine.Config` (one step:
``TRAINING``, ``OPTIMIZER``, ``LR_SCHEDULE``, ``DISTILLATION``, ``SCHEDULE`` for the staged or gradual
binarization callback, ``HARDWARE``, ``EXPERIMENT``), the same object ``bnn-train`` fills from YAML, so one
request trains the same from Python and from a recipe file.

One epoch: callbacks' ``on_epoch_begin`` (binarizers switched, see
:mod:`bnn.engine.binarization_schedule`), weight decay on/off, then for each
group of ``TRAINING.BATCH_MULTIPLIER`` batches: forward (under ``torch.autocast`` on CUDA
when ``TRAINING.AMP``), loss = cross-entropy (or the distillation loss against the
teacher), ``loss / group_size`` backward (GradScaler on CUDA float16), one
optimizer step and one LR-scheduler step; then validation (top-1/top-5),
``metrics.csv``/TensorBoard, ``curves.png``, ``last.pth`` and, when the validation top-1 is the
best so far, ``best.pth`` (both with the run's record, see :mod:`bnn.engine.run_dir`). A run starts
with :func:`~bnn.engine.reporting.run_banner`. A NaN/inf loss raises :class:`NonFiniteLossError`
naming the epoch and step before anything is written, so the last checkpoint
is the last good one. Checkpoints are written only at epoch ends: a run killed
mid-epoch resumes (``resume="auto"``) from the start of that epoch with the
exact model, optimizer, scheduler, scaler, callback, RNG and sampler state, so
its weights end bit-identical (on CPU) to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from ..data import set_epoch
from .binarization_schedule import Callback, TwoStageSchedule, build_callbacks, schedule_callbacks
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, environment_info, get_rng_state, load_checkpoint,
                         load_model_state, save_checkpoint, set_rng_state)
from .distill import DistillationLoss, freeze_teacher
from .distributed import (all_gather_object, all_reduce_sum, barrier, broadcast_buffers, distributed_loader, get_rank, get_world_size, init_distributed,
                          is_distributed, wrap_ddp)
from .evaluate import accumulate, metrics_from_sums, topk_correct
from .lr_schedule import build_lr_scheduler, lr_schedule_args
from .optim import build_optimizer, set_weight_decay_enabled
from .reporting import Reporter, Throughput, run_banner
from .schema import Config, config_to_dict

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "seed_everything", "topk_correct"]

#: the top-k accuracies a run reports (train and validation)
TOPK = (1, 5)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and the step."""

    def __init__(self, message: str, epoch: int, step: int, value: float) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.value = value


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    ``history``: one dict per completed epoch (the ``metrics.csv`` rows; ``epoch`` is 1-based).
    ``best_top1``/``best_epoch``: best validation top-1 (training top-1 without a val loader) and its
    1-based epoch. ``last_checkpoint``/``best_checkpoint``: paths (``None`` on ranks > 0).
    """

    history: List[Dict[str, float]] = field(default_factory=list)
    best_top1: float = float("nan")
    best_epoch: int = 0
    epochs_completed: int = 0
    exp_dir: str = ""
    last_checkpoint: Optional[str] = None
    best_checkpoint: Optional[str] = None

    @property
    def final(self) -> Dict[str, float]:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _resolve_device(device: Union[None, str, torch.device], cfg: Config, local_rank: int) -> torch.device:
    if device is None:
        device = cfg.HARDWARE.DEVICE
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


class Trainer:
    """Trains ``model`` on ``train_loader``, validating on ``val_loader`` every epoch.

    Args:
        model: the (prepared) network; moved to the device. ``trainer.model`` is this module,
            ``trainer.ddp_model`` what runs the forward (DDP-wrapped when distributed).
        train_loader, val_loader: ``DataLoader`` s yielding ``(inputs, targets)``; ``val_loader`` may be None.
            Under ``torchrun`` both get a ``DistributedSampler``.
        cfg: a recipe :class:`~bnn.engine.Config` (one step: its top-level sections; :func:`bnn.engine.train`
            runs a recipe's steps), or a nested mapping for :meth:`Config.from_dict <bnn.engine.Config.from_dict>`.
            Default ``Config()``, the schema's defaults.
        callbacks: :class:`~bnn.engine.binarization_schedule.Callback` objects or ``{"name": ..., **args}``
            specs, added after the callback of ``cfg.SCHEDULE`` (staged or gradual binarization).
        teacher: a float model; when given, the loss is :class:`DistillationLoss`
            (``DISTILLATION.ALPHA``, ``TEMPERATURE``); ``DISTILLATION.ENABLED`` requires it.
        device: overrides ``HARDWARE.DEVICE``.
        criterion: loss on ``(logits, targets)`` (default cross-entropy with ``TRAINING.LABEL_SMOOTHING``).
        exp_dir: overrides the run directory ``EXPERIMENT.DIR/EXPERIMENT.NAME``.
        run_info: what the checkpoints record besides the versions, git commit and seed (``bnn-train``
            records its recipe there, see :mod:`bnn.engine.run_dir`), stored as ``state["meta"]``.
        notes: lines said before the run started (``bnn-train``: the settings a resume changed, warnings),
            written to ``train.log`` ahead of the banner so that the log tells the whole story.
    """

    def __init__(self, model: nn.Module, train_loader, val_loader=None, cfg: Union[Config, Dict[str, Any], None] = None,
                 callbacks: Iterable[Any] = (), teacher: Optional[nn.Module] = None,
                 device: Union[None, str, torch.device] = None, criterion: Optional[nn.Module] = None,
                 exp_dir: Optional[str] = None, run_info: Optional[Dict[str, Any]] = None,
                 notes: Iterable[str] = ()) -> None:
        if cfg is None:
            cfg = Config()
        elif isinstance(cfg, dict):
            cfg = Config.from_dict(cfg)
        elif not isinstance(cfg, Config):
            raise TypeError(f"Trainer: cfg must be a bnn.engine.Config or a mapping of its sections, got {type(cfg).__name__}")
        self.cfg = cfg
        t = cfg.TRAINING
        self.epochs = int(t.EPOCHS)
        pre_device = _resolve_device(device, cfg, int(os.environ.get("LOCAL_RANK", 0)))
        self.dist = init_distributed(cfg.HARDWARE.DIST_BACKEND, use_cuda=pre_device.type == "cuda")
        self.device = _resolve_device(device, cfg, self.dist.local_rank)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0

        self.model = model.to(self.device)
        self.callbacks: List[Callback] = schedule_callbacks(cfg.SCHEDULE) + build_callbacks(list(callbacks))
        if cfg.SCHEDULE.NAME == "two_stage" and not any(isinstance(cb, TwoStageSchedule) for cb in self.callbacks):
            raise ValueError("Trainer: SCHEDULE.NAME is two_stage, two runs: train the recipe with bnn.engine.train(cfg) "
                             "(or pass callbacks=[{'name': 'two_stage', 'stage': 1 or 2}] for one of them)")
        self.batch_multiplier = int(t.BATCH_MULTIPLIER)
        self.train_loader = distributed_loader(train_loader, seed=t.SEED)
        self.val_loader = distributed_loader(val_loader, evaluation=True) if val_loader is not None else None
        self.ddp_model = wrap_ddp(self.model, self.device)

        dist = cfg.DISTILLATION
        if dist.ENABLED and teacher is None:
            raise ValueError("DISTILLATION.ENABLED is true but no teacher model was given to the Trainer")
        self.teacher = freeze_teacher(teacher.to(self.device)) if teacher is not None else None
        self.distill_loss = DistillationLoss(dist.ALPHA, dist.TEMPERATURE, t.LABEL_SMOOTHING) if self.teacher is not None else None
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss(label_smoothing=t.LABEL_SMOOTHING)

        self.optimizer = build_optimizer(self.model, cfg.OPTIMIZER)
        n_batches = len(self.train_loader)
        if t.MAX_STEPS_PER_EPOCH:
            n_batches = min(n_batches, int(t.MAX_STEPS_PER_EPOCH) * self.batch_multiplier)
        self.batches_per_epoch = n_batches
        self.steps_per_epoch = max(1, math.ceil(n_batches / self.batch_multiplier))
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.LR_SCHEDULE, self.epochs, self.steps_per_epoch,
                                            [cb.lr_factor for cb in self.callbacks])
        self.use_amp = bool(t.AMP) and self.device.type == "cuda"
        self.amp_dtype = torch.float16 if t.AMP_DTYPE == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

        self.exp_dir = str(exp_dir) if exp_dir is not None else cfg.run_dir()
        self.last_path = os.path.join(self.exp_dir, "last.pth")
        self.best_path = os.path.join(self.exp_dir, "best.pth")
        self.start_epoch = 0
        self.epoch = 0
        self.global_step = 0
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.history: List[Dict[str, float]] = []
        self.reporter: Optional[Reporter] = None
        self._epoch_lr = float(self.optimizer.param_groups[0]["lr"])
        self.run_info: Dict[str, Any] = {**environment_info(), "seed": t.SEED, **(run_info or {})}
        self.notes: List[str] = list(notes)
        self.num_classes: Optional[int] = None
        self.epoch_speed: Dict[str, float] = {"img_s": 0.0, "data_s": 0.0, "data_share": 0.0}

    # ------------------------------------------------------------------ helpers
    def info(self, msg: str) -> None:
        if self.reporter is not None:
            self.reporter.info(msg)

    def close(self) -> None:
        """Close the log file and TensorBoard writer (``fit`` does this itself; safe to call twice)."""
        if self.reporter is not None:
            self.reporter.close()

    def _autocast(self):
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def weight_decay_on(self, epoch: int) -> bool:
        """False from ``OPTIMIZER.DISABLE_WD_EPOCH`` on, or when any callback switches weight decay off."""
        stop = self.cfg.OPTIMIZER.DISABLE_WD_EPOCH
        if stop is not None and epoch >= stop:
            return False
        return all(cb.weight_decay_enabled(epoch) for cb in self.callbacks)

    def _loader_generators(self) -> List[Optional[torch.Generator]]:
        loader = self.train_loader
        return [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume exactly (see :mod:`bnn.engine.checkpoint`)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "callbacks": [{"type": type(cb).__name__, "state": cb.state_dict()}
                          for cb in self.callbacks],
            "rng": get_rng_state(),
            "loader_generators": [g.get_state() if isinstance(g, torch.Generator) else None for g in self._loader_generators()],
            "sampler_epoch": self.start_epoch,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "config": config_to_dict(self.cfg),
            "world_size": self.world_size,
            "meta": self.run_info,
        }

    def load_state_dict(self, state: Dict[str, Any], path: str = "<state>") -> None:
        """Restore a :meth:`state_dict` (all but the RNG states, see :meth:`fit`); errors name ``path``."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} is not a bnn training checkpoint (format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        epoch, step = int(state.get("epoch", 0)), int(state.get("global_step", 0))
        if epoch > 0 and step != epoch * self.steps_per_epoch:  # the LR schedule is indexed by optimizer step
            raise CheckpointError(
                f"checkpoint {path} made {step // epoch} optimizer steps per epoch, this run makes {self.steps_per_epoch} "
                f"(batch size, batch_multiplier, data or process count changed): its learning-rate schedule would "
                f"not continue; resume with the run's settings")
        load_model_state(self.model, state, path=path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {path} does not match the optimizer: {str(exc).splitlines()[0]}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        # callback states are matched by class name, in order (a callback added or removed on resume
        # keeps its fresh state; the binarization schedules are pure functions of the epoch anyway)
        pending: Dict[str, List[Any]] = {}
        for entry in state.get("callbacks", []):
            pending.setdefault(entry.get("type", ""), []).append(entry.get("state", {}))
        for cb in self.callbacks:
            states = pending.get(type(cb).__name__)
            if states:
                cb.load_state_dict(states.pop(0))
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_top1 = float(state.get("best_top1", -1.0))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.history = list(state.get("history", []))

    def _save(self, is_best: bool) -> None:
        rng_all = all_gather_object(get_rng_state()) if self.world_size > 1 else None  # every rank takes part
        if not self.is_main:
            return
        state = self.state_dict()
        if rng_all is not None:
            state["rng_all"] = rng_all  # each rank resumes with its own RNG state
        save_checkpoint(state, self.last_path)
        if is_best:
            save_checkpoint(state, self.best_path)

    def load_result(self) -> TrainResult:
        """The :class:`TrainResult` recorded in ``last.pth`` (for a run that already finished)."""
        state = load_checkpoint(self.last_path)
        self.history = list(state.get("history", []))
        self.best_top1 = float(state.get("best_top1", -1.0))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.start_epoch = int(state.get("epoch", 0))
        return self._result()

    def _result(self) -> TrainResult:
        return TrainResult(
            history=list(self.history), best_top1=self.best_top1, best_epoch=self.best_epoch,
            epochs_completed=self.start_epoch, exp_dir=self.exp_dir,
            last_checkpoint=self.last_path if self.is_main and os.path.exists(self.last_path) else None,
            best_checkpoint=self.best_path if self.is_main and os.path.exists(self.best_path) else None,
        )

    # -------------------------------------------------------------------- loop
    def fit(self, resume: Union[None, bool, str] = None) -> TrainResult:
        """Train ``TRAINING.EPOCHS`` epochs (from where the checkpoint left off when resuming).

        ``resume``: ``None``/``False``/``""`` starts fresh; ``"auto"``/``True`` resumes from ``last.pth`` when it
        exists; a path resumes from that checkpoint.
        Raises :class:`NonFiniteLossError` on a NaN/inf loss (checkpoints untouched) and
        :class:`~bnn.engine.checkpoint.CheckpointError` for an unreadable/mismatched checkpoint.
        """
        exp = self.cfg.EXPERIMENT
        path = None
        if resume in (True, "auto"):
            path = self.last_path if os.path.exists(self.last_path) else None
        elif resume:
            path = str(resume)
        ckpt = load_checkpoint(path) if path else None
        if ckpt is not None:
            self.load_state_dict(ckpt, path)
        else:
            seed_everything(int(self.cfg.TRAINING.SEED) + self.rank)

        self.reporter = Reporter(self.exp_dir, enabled=self.is_main, tensorboard=exp.TENSORBOARD)
        try:
            for line in self.notes:  # already on the console: to the file only
                self.reporter.logger.debug(line)
            if ckpt is not None:
                self.reporter.truncate_metrics(self.start_epoch)
                self.info(f"resumed from {path} at epoch {self.start_epoch}/{self.epochs} (step {self.global_step})")
            if self.is_main:
                for line in run_banner(self.exp_dir, self.model, self.train_loader, self.val_loader, self.run_info,
                                       self.device):
                    self.info(line)
            self._log_header()
            for cb in self.callbacks:
                cb.on_train_begin(self)
            if ckpt is not None:  # RNG last: nothing after this point draws random numbers before the epoch
                rng_all = ckpt.get("rng_all")
                set_rng_state(rng_all[self.rank] if rng_all and len(rng_all) == self.world_size else ckpt["rng"])
                for gen, st in zip(self._loader_generators(), ckpt.get("loader_generators", [])):
                    if isinstance(gen, torch.Generator) and st is not None:
                        gen.set_state(st)
            for epoch in range(self.start_epoch, self.epochs):
                self._run_epoch(epoch)
            result = self._result()
            if self.is_main and exp.PLOT and os.path.exists(self.reporter.png_path):
                self.info(f"curves: {self.reporter.png_path}")
            self.info(f"done: best top-1 {self.best_top1:.2f}% at epoch {self.best_epoch}; checkpoints in {os.path.dirname(self.last_path) or '.'}")
            for cb in self.callbacks:
                cb.on_train_end(self, result)
            return result
        except NonFiniteLossError as exc:
            self.reporter.error(f"{exc}")
            raise
        finally:
            self.reporter.close()

    def _log_header(self) -> None:
        groups = ", ".join(f"{g['name']}({len(g['params'])} tensors, wd={g['initial_weight_decay']:g}, lr={g['lr']:g})"
                           for g in self.optimizer.param_groups)
        self.info(f"device {self.device}, amp {'on' if self.use_amp else 'off'}, processes {self.world_size}, "
                  f"{self.steps_per_epoch} steps/epoch x batch_multiplier {self.batch_multiplier}")
        lrs = self.cfg.LR_SCHEDULE
        self.info(f"optimizer {self.cfg.OPTIMIZER.NAME}: {groups}; lr schedule {lrs.NAME} {lr_schedule_args(lrs) or ''}".rstrip())
        if self.teacher is not None:
            dist = self.cfg.DISTILLATION
            self.info(f"distillation: alpha {dist.ALPHA}, temperature {dist.TEMPERATURE}")
        if self.callbacks:
            self.info("callbacks: " + ", ".join(type(cb).__name__ for cb in self.callbacks))

    def _run_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for loader in (self.train_loader, self.val_loader):
            if loader is not None:
                set_epoch(loader, epoch)  # sampler order and worker seeds depend on the epoch only
        wd_on = self.weight_decay_on(epoch)
        set_weight_decay_enabled(self.optimizer, wd_on)
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        start = time.time()
        train = self.train_one_epoch(epoch)
        val = self.validate() if self.val_loader is not None else {}
        row: Dict[str, float] = {"epoch": epoch + 1, **train, **val,
                                 "lr": self._epoch_lr, "weight_decay_on": int(wd_on),
                                 "time_s": round(time.time() - start, 3)}
        score = row.get("val_top1", row.get("train_top1", 0.0))
        is_best = score > self.best_top1
        if is_best:
            self.best_top1, self.best_epoch = float(score), epoch + 1
        self.history.append(row)
        self.start_epoch = epoch + 1
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, row)
        self._save(is_best)
        if self.reporter is not None:
            self.reporter.log_epoch(row)
            if self.cfg.EXPERIMENT.PLOT:  # every epoch: a killed run keeps its plot
                self.reporter.plot(self.num_classes)
        val_txt = (f"  val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2f} top5 {row['val_top5']:.2f}"
                   if "val_top1" in row else "")
        self.info(f"epoch {epoch + 1}/{self.epochs}  train loss {row['train_loss']:.4f} top1 {row['train_top1']:.2f}"
                  f"{val_txt}  lr {row['lr']:.3g}  wd {'on' if wd_on else 'off'}  {row['time_s']:.1f}s"
                  f"  {self.epoch_speed['img_s']:.0f} img/s, data {self.epoch_speed['data_s']:.1f}s"
                  f"{'  *best*' if is_best else ''}")
        barrier()

    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor):
        with self._autocast():
            out = self.ddp_model(inputs)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_out = self.teacher(inputs)
                loss = self.distill_loss(out, teacher_out, targets)
            else:
                loss = self.criterion(out, targets)
        return out, loss

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=self.device)
        all_reduce_sum(bad)  # every rank stops together under DDP
        if bad.item() > 0:
            value = float(loss.detach().float().item())
            msg = (f"non-finite loss ({value}) at epoch {epoch + 1}/{self.epochs}, step {step + 1}/{self.steps_per_epoch}"
                   f" (global step {self.global_step}); stopped, the last good checkpoint is "
                   f"{self.last_path if os.path.exists(self.last_path) else '(none yet)'}")
            raise NonFiniteLossError(msg, epoch + 1, step + 1, value)

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the training loader; returns ``train_loss``, ``train_top1``, ``train_top5`` (over ranks)."""
        t = self.cfg.TRAINING
        self.ddp_model.train()
        if self.teacher is not None:
            self.teacher.eval()
        bm, n_batches = self.batch_multiplier, self.batches_per_epoch
        sums = torch.zeros(2 + len(TOPK), dtype=torch.float64)  # loss*n, n, correct@k...
        bar = None
        if self.is_main and self.cfg.EXPERIMENT.PROGRESS_BAR:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True)
        self.optimizer.zero_grad(set_to_none=True)
        step_in_epoch = 0
        group_size = bm
        interval, whole = Throughput(), Throughput()
        try:
            for i, batch in enumerate(self.train_loader):
                if i >= n_batches:
                    break
                interval.data_ready()
                whole.data_ready()
                inputs, targets = batch[0], batch[1]
                micro = i % bm
                if micro == 0:
                    group_size = min(bm, n_batches - i)
                    for cb in self.callbacks:
                        cb.on_step_begin(self, self.scheduler.last_epoch / self.steps_per_epoch)
                inputs = inputs.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                last_micro = micro == group_size - 1
                sync = contextlib.nullcontext()
                if not last_micro and isinstance(self.ddp_model, nn.parallel.DistributedDataParallel):
                    sync = self.ddp_model.no_sync()
                with sync:
                    out, loss = self._forward_loss(inputs, targets)
                    self._check_finite(loss, epoch, step_in_epoch)
                    self.scaler.scale(loss / group_size).backward()
                if last_micro:
                    self._epoch_lr = self.optimizer.param_groups[0]["lr"]
                    if t.GRAD_CLIP:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.GRAD_CLIP)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    self.global_step += 1
                    step_in_epoch += 1
                n = targets.shape[0]
                with torch.no_grad():
                    correct = topk_correct(out.detach().float(), targets, TOPK)
                sums[0] += float(loss.detach().float().item()) * n
                sums[1] += n
                for j, c in enumerate(correct):
                    sums[2 + j] += c
                self.num_classes = out.shape[-1]
                interval.step_done(n)
                whole.step_done(n)
                if bar is not None:
                    bar.update(1)
                if (i + 1) % max(1, t.LOG_INTERVAL) == 0 or i + 1 == n_batches:
                    lr = self.optimizer.param_groups[0]["lr"]
                    avg = sums[0].item() / max(sums[1].item(), 1)
                    acc = 100.0 * sums[2].item() / max(sums[1].item(), 1)
                    speed = interval.take()
                    if bar is not None:
                        bar.set_postfix(loss=f"{avg:.4f}", acc=f"{acc:.2f}", lr=f"{lr:.3g}", img_s=f"{speed['img_s']:.0f}",
                                        data=f"{100 * speed['data_share']:.0f}%", refresh=False)
                    if self.reporter is not None:
                        self.reporter.logger.debug(f"epoch {epoch + 1} batch {i + 1}/{n_batches} loss {avg:.4f} top1 {acc:.2f} lr {lr:.4g}"
                                                   f" {speed['img_s']:.1f} img/s data {speed['data_s']:.3f}s ({100 * speed['data_share']:.0f}%)")
                        self.reporter.log_step(self.global_step, {"loss": float(loss.detach().float().item()), "lr": lr})
        finally:
            if bar is not None:
                bar.close()
        self.epoch_speed = whole.take()  # images/s and data-loading time of the epoch (console and train.log)
        return self._reduce(sums, "train")

    def _reduce(self, sums: torch.Tensor, prefix: str) -> Dict[str, float]:
        if is_distributed():
            t = sums.to(self.device)
            all_reduce_sum(t)
            sums = t.cpu()
        return metrics_from_sums(sums, TOPK, prefix)

    @torch.no_grad()
    def validate(self, loader=None) -> Dict[str, float]:
        """Loss (cross-entropy), top-1 and top-5 (percent) on ``loader`` (default the val loader), over all ranks."""
        loader = loader if loader is not None else self.val_loader
        self.ddp_model.eval()  # the plain module runs the forward: ranks may hold shards of unequal length
        broadcast_buffers(self.model)  # so every rank evaluates (and keeps) rank 0's BatchNorm statistics
        progress = f"validate {self.epoch + 1}/{self.epochs}" if self.is_main and self.cfg.EXPERIMENT.PROGRESS_BAR else None
        sums = accumulate(self.model, loader, self.device, TOPK, self._autocast, progress)
        return self._reduce(sums, "val")
