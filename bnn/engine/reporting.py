"""Logging of a training run: stdout + ``train.log``, ``metrics.csv``, TensorBoard, ``curves.png``.

Only the main process (rank 0) writes anything; other ranks get a reporter that
does nothing. ``metrics.csv`` has one row per epoch (columns
:data:`METRIC_COLUMNS`, extra keys appended); on resume, rows of epochs that
will be re-run are dropped so the file always matches the checkpoint.
TensorBoard events are written to ``<exp_dir>/tensorboard`` when the
``tensorboard`` package is installed. :func:`plot_metrics` draws the loss,
accuracy and learning-rate curves with matplotlib's Agg backend (no display),
as :func:`curve_plan` decides: the best epoch marked, top-5 left out where it
says nothing (10 classes or fewer). :func:`run_banner` is what a run says
about itself when it starts; :class:`Throughput` measures images per second
and the time spent waiting for data.
"""
from __future__ import annotations

import csv
import logging
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["Reporter", "METRIC_COLUMNS", "read_metrics", "plot_metrics", "curve_plan", "best_epoch", "run_banner",
           "Throughput", "TOP5_MIN_CLASSES"]

#: top-5 accuracy is drawn only with more classes than this (with 10 classes it is 50% by chance).
TOP5_MIN_CLASSES = 11

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
    "lr", "weight_decay_on", "time_s",
)


def read_metrics(csv_path: str) -> List[Dict[str, float]]:
    """Rows of ``metrics.csv`` as dicts of floats (empty cells are skipped)."""
    if not os.path.exists(csv_path):
        return []
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parsed = {}
            for k, v in row.items():
                if v not in (None, ""):
                    try:
                        parsed[k] = float(v)
                    except ValueError:
                        pass
            rows.append(parsed)
    return rows


def best_epoch(rows: Sequence[Dict[str, float]]) -> Optional[int]:
    """The epoch of the highest validation top-1 (training top-1 without validation); the first on ties."""
    key = "val_top1" if any("val_top1" in r for r in rows) else "train_top1"
    scored = [(r[key], -int(r.get("epoch", i + 1))) for i, r in enumerate(rows) if key in r]
    return -max(scored)[1] if scored else None


def curve_plan(rows: Sequence[Dict[str, float]], num_classes: Optional[int] = None) -> List[Dict[str, Any]]:
    """What :func:`plot_metrics` draws: one dict per panel, ``{"title", "ylabel", "keys", "best_epoch"}``.

    Panels: loss (train, val), accuracy (train top-1, val top-1, and val top-5 unless the model has
    fewer than :data:`TOP5_MIN_CLASSES` classes, or ``num_classes`` is unknown and top-5 is 100% at
    every epoch), learning rate. Only keys present in ``rows`` are drawn; ``best_epoch`` is marked.
    """
    present = {k for r in rows for k in r}
    acc = ["train_top1", "val_top1"]
    top5 = [r["val_top5"] for r in rows if "val_top5" in r]
    if top5 and (num_classes >= TOP5_MIN_CLASSES if num_classes is not None else min(top5) < 100.0):
        acc.append("val_top5")
    best = best_epoch(rows)
    panels = [("loss", "cross-entropy loss", ["train_loss", "val_loss"]),
              ("accuracy", "accuracy (%)", acc),
              ("learning rate", "learning rate", ["lr"])]
    return [{"title": title, "ylabel": ylabel, "keys": [k for k in keys if k in present], "best_epoch": best}
            for title, ylabel, keys in panels]


def plot_metrics(rows: Sequence[Dict[str, float]], png_path: str, num_classes: Optional[int] = None) -> Optional[str]:
    """Draw :func:`curve_plan`'s panels against the epoch into one PNG (matplotlib Agg), atomically."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    plan = curve_plan(rows, num_classes)
    fig, axes = plt.subplots(1, len(plan), figsize=(5 * len(plan), 4))
    for ax, panel in zip(axes, plan):
        for key in panel["keys"]:
            xs = [e for e, r in zip(epochs, rows) if key in r]
            ys = [r[key] for r in rows if key in r]
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
        if panel["best_epoch"] is not None:
            ax.axvline(panel["best_epoch"], color="gray", linestyle="--", linewidth=1,
                       label=f"best epoch {panel['best_epoch']}")
        ax.set_title(panel["title"])
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel["ylabel"])
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


def _dataset_size(loader) -> str:
    """``"10,000"``, or ``"?"`` for a loader without one (none, or an iterable data set)."""
    try:
        return f"{len(loader.dataset):,}"
    except (AttributeError, TypeError):
        return "?"


def _sample_shape(loader) -> Optional[Sequence[int]]:
    """The shape of one input (no batch dimension), read without touching any RNG state."""
    from .checkpoint import get_rng_state, set_rng_state

    try:
        state = get_rng_state()
        try:
            sample = loader.dataset[0]
        finally:
            set_rng_state(state)
        x = sample[0] if isinstance(sample, (tuple, list)) else sample
        return tuple(x.shape) if torch.is_tensor(x) else None
    except Exception:  # noqa: BLE001 - an iterable data set, a failing transform: no shape, no MAC count
        return None


def run_banner(exp_dir: str, model: nn.Module, train_loader, val_loader, info: Dict[str, Any],
               device: Optional[torch.device] = None) -> List[str]:
    """What a run says when it starts (the console and ``train.log``): the output folder, the command
    line, data set sizes, parameter count, how many conv/linear layers are binarized and their share
    of the MACs (:func:`bnn.summary` on one sample), the seed, versions and git commit.

    ``info`` is the run's checkpoint record (:func:`bnn.engine.checkpoint.environment_info` plus
    ``seed``)."""
    from ..layers import BinaryLayerMixin
    from ..summary import summary

    lines = [f"output folder: {os.path.abspath(exp_dir)}"]
    if info.get("argv"):
        argv = [os.path.basename(str(info["argv"][0]))] + [str(a) for a in info["argv"][1:]]
        lines.append("command: " + " ".join(shlex.quote(a) for a in argv))
    shape = _sample_shape(val_loader if val_loader is not None else train_loader)
    lines.append(f"data: {_dataset_size(train_loader)} training, {_dataset_size(val_loader)} validation images"
                 + (f" of {'x'.join(map(str, shape))}" if shape else ""))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"model: {type(model).__name__}, {params:,} parameters ({trainable:,} trainable)")
    binary = {name for name, m in model.named_modules() if isinstance(m, BinaryLayerMixin)}
    result = None
    if shape is not None:
        try:
            result = summary(model, shape, print_fn=None, device=device)
        except Exception:  # noqa: BLE001 - a model that takes other inputs: no MAC count, but the run goes on
            result = None
    if result is not None:
        total = result.total_macs or 1
        binary_macs = sum(layer.macs for layer in result.layers if layer.name in binary)
        lines.append(f"binarized: {len(binary)} of {len(result.layers)} conv/linear layers, "
                     f"{100.0 * binary_macs / total:.1f}% of {result.total_macs:,} MACs per image")
    else:
        lines.append(f"binarized: {len(binary)} conv/linear layers")
    versions = info.get("versions", {})
    lines.append(f"seed {info.get('seed')}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; git {info.get('git_commit') or 'unknown'}")
    return lines


class Throughput:
    """Images per second and time spent waiting for the data loader, since the last :meth:`take`.

    In the training loop: :meth:`data_ready` right after a batch arrives (the time since the previous
    :meth:`step_done` was spent waiting for data), :meth:`step_done` after the step. ``clock``:
    seconds as a float (default ``time.perf_counter``).
    """

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.reset()

    def reset(self, now: Optional[float] = None) -> None:
        self.images = 0
        self.data_s = 0.0
        self.start = self._mark = self.clock() if now is None else now

    def data_ready(self) -> None:
        now = self.clock()
        self.data_s += now - self._mark
        self._mark = now

    def step_done(self, images: int) -> None:
        self.images += int(images)
        self._mark = self.clock()

    def take(self) -> Dict[str, float]:
        """``{"img_s", "data_s", "data_share"}`` since the last reset, then reset."""
        now = self.clock()
        elapsed = max(now - self.start, 1e-9)
        out = {"img_s": self.images / elapsed, "data_s": self.data_s, "data_share": self.data_s / elapsed}
        self.reset(now)
        return out


class Reporter:
    """Writes the logs of one run under ``exp_dir`` (a no-op when ``enabled`` is False: rank != 0)."""

    def __init__(self, exp_dir: str, enabled: bool = True, tensorboard: bool = True, name: str = "bnn.engine") -> None:
        self.exp_dir = exp_dir
        self.enabled = enabled
        self.csv_path = os.path.join(exp_dir, "metrics.csv")
        self.log_path = os.path.join(exp_dir, "train.log")
        self.png_path = os.path.join(exp_dir, "curves.png")
        self.logger = logging.getLogger(f"{name}.{id(self)}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.tb = None
        self._handlers: List[logging.Handler] = []
        if not enabled:
            self.logger.addHandler(logging.NullHandler())
            return
        os.makedirs(exp_dir, exist_ok=True)
        fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
        stream = logging.StreamHandler(sys.stdout)
        stream.setLevel(logging.INFO)  # per-step lines (debug) go to the file only
        for handler in (stream, logging.FileHandler(self.log_path, encoding="utf-8")):
            handler.setFormatter(fmt)
            self.logger.addHandler(handler)
            self._handlers.append(handler)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(log_dir=os.path.join(exp_dir, "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard not installed: skip
                self.tb = None

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def error(self, msg: str) -> None:
        self.logger.error(msg)

    def truncate_metrics(self, keep_epochs_below_or_equal: int) -> None:
        """Drop ``metrics.csv`` rows with ``epoch > keep_epochs_below_or_equal`` (resume)."""
        if not self.enabled or not os.path.exists(self.csv_path):
            return
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or list(METRIC_COLUMNS)
            rows = [r for r in reader if r.get("epoch") and float(r["epoch"]) <= keep_epochs_below_or_equal]
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def log_epoch(self, row: Dict[str, float]) -> None:
        """Append one row to ``metrics.csv`` and TensorBoard (epoch is 1-based in both)."""
        if not self.enabled:
            return
        fields = list(METRIC_COLUMNS) + [k for k in row if k not in METRIC_COLUMNS]
        exists = os.path.exists(self.csv_path) and os.path.getsize(self.csv_path) > 0
        if exists:
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
            if header:
                fields = header + [k for k in row if k not in header]
                if len(fields) != len(header):  # a new column: rewrite with the wider header
                    old = read_metrics(self.csv_path)
                    with open(self.csv_path, "w", newline="", encoding="utf-8") as fh:
                        w = csv.DictWriter(fh, fieldnames=fields)
                        w.writeheader()
                        w.writerows(old)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in fields})
        if self.tb is not None:
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"epoch/{key}", value, step)
            self.tb.flush()

    def log_step(self, global_step: int, values: Dict[str, float]) -> None:
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"step/{key}", value, global_step)

    def plot(self, num_classes: Optional[int] = None) -> Optional[str]:
        if not self.enabled:
            return None
        try:
            return plot_metrics(read_metrics(self.csv_path), self.png_path, num_classes)
        except Exception as exc:  # noqa: BLE001 - a plot must never fail a finished run
            self.info(f"could not draw {self.png_path}: {exc}")
            return None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        for handler in self._handlers:
            handler.close()
            self.logger.removeHandler(handler)
        self._handlers = []
