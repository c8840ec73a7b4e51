"""Logging of a training run: stdout + ``train.log``, ``metrics.csv``, TensorBoard, ``curves.png``.

Only the main process (rank 0) writes anything; other ranks get a reporter that
does nothing. ``metrics.csv`` has one row per epoch (columns
:data:`METRIC_COLUMNS`, extra keys appended); on resume, rows of epochs that
will be re-run are dropped so the file always matches the checkpoint.
TensorBoard events are written to ``<exp_dir>/tensorboard`` when the
``tensorboard`` package is installed. :func:`plot_metrics` draws the loss,
accuracy and learning-rate curves with matplotlib's Agg backend (no display).
"""
from __future__ import annotations

import csv
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

__all__ = ["Reporter", "METRIC_COLUMNS", "read_metrics", "plot_metrics"]

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


def plot_metrics(rows: Sequence[Dict[str, float]], png_path: str) -> Optional[str]:
    """Loss, top-1 accuracy and learning rate against the epoch, in one PNG (matplotlib Agg)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, keys, title in (
        (axes[0], ("train_loss", "val_loss"), "loss"),
        (axes[1], ("train_top1", "val_top1", "val_top5"), "accuracy (%)"),
        (axes[2], ("lr",), "learning rate"),
    ):
        for key in keys:
            xs = [e for e, r in zip(epochs, rows) if key in r]
            ys = [r[key] for r in rows if key in r]
            if ys:
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


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

    def plot(self) -> Optional[str]:
        if not self.enabled:
            return None
        try:
            return plot_metrics(read_metrics(self.csv_path), self.png_path)
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
