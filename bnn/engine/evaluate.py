"""Evaluation: top-k accuracy and loss of a model over a loader, and the ``bnn-eval`` command.

::

    bnn-eval experiments/quickstart                 # best.pth on the run's validation data
    bnn-eval experiments/quickstart --which last

Top-k: a sample counts as correct when its target is among the k largest logits (k capped at the
number of classes); the loss is the mean cross-entropy. The :class:`~bnn.engine.Trainer` validates
through :func:`accumulate` too, so ``bnn-eval`` on a run's checkpoint prints the top-1 that the run
recorded for that epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["topk_correct", "accumulate", "metrics_from_sums", "evaluate", "main"]


def topk_correct(output: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at the class count)."""
    num_classes = output.shape[-1]
    maxk = min(max(ks), num_classes)
    pred = output.topk(maxk, dim=-1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, num_classes)].any(dim=1).sum().item()) for k in ks]


@torch.no_grad()
def accumulate(model: nn.Module, loader, device: torch.device, topk: Sequence[int] = (1, 5),
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               progress: Optional[str] = None) -> torch.Tensor:
    """Sums over ``loader``: ``[loss * n, n, correct@k for k in topk]`` (float64, on the CPU).

    ``model`` runs as it is (call ``eval()`` first); ``progress``: a description shows a tqdm bar.
    """
    sums = torch.zeros(2 + len(topk), dtype=torch.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader), desc=progress, leave=False, dynamic_ncols=True)
    try:
        for batch in loader:
            inputs = batch[0].to(device, non_blocking=True)
            targets = batch[1].to(device, non_blocking=True)
            with autocast():
                out = model(inputs)
            loss = F.cross_entropy(out.float(), targets)
            n = targets.shape[0]
            sums[0] += float(loss.item()) * n
            sums[1] += n
            for j, c in enumerate(topk_correct(out.float(), targets, topk)):
                sums[2 + j] += c
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return sums


def metrics_from_sums(sums: torch.Tensor, topk: Sequence[int], prefix: str) -> Dict[str, float]:
    """``{prefix_loss, prefix_top<k>...}`` (accuracies in percent) from :func:`accumulate`'s sums."""
    n = max(sums[1].item(), 1.0)
    out = {f"{prefix}_loss": sums[0].item() / n}
    for j, k in enumerate(topk):
        out[f"{prefix}_top{k}"] = 100.0 * sums[2 + j].item() / n
    return out


def evaluate(model: nn.Module, loader, device: Optional[torch.device] = None, topk: Sequence[int] = (1, 5),
             progress: Optional[str] = None) -> Dict[str, float]:
    """``{"loss", "top1", "top5", ..., "images"}`` of ``model`` (put in eval mode) over ``loader``."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    model.eval()
    sums = accumulate(model, loader, torch.device(device), topk, progress=progress)
    out = {k.split("_", 1)[1]: v for k, v in metrics_from_sums(sums, topk, "eval").items()}
    out["images"] = int(sums[1].item())
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnn-eval", description="Evaluate a bnn-train run's checkpoint on the run's validation data.")
    parser.add_argument("run", metavar="RUN_DIR", help="the run's folder (EXPERIMENT.DIR/NAME) or a checkpoint file")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="which checkpoint (default: best)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's evaluation batch size")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bnn-eval``; prints the top-1 (and top-5, loss) and returns the exit status."""
    from .run_dir import RUN_ERRORS, load_run, validation_loader

    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        run = load_run(args.run, which=args.which, device=device)
        loader = validation_loader(run.config, batch_size=args.batch_size, workers=args.workers)
        result = evaluate(run.model, loader, device, progress=None if args.no_progress else "evaluate")
    except RUN_ERRORS as exc:
        if os.environ.get("BNN_DEBUG"):
            raise
        print(f"bnn-eval: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    recorded = run.recorded_top1()
    note = f" (recorded at epoch {run.epoch}: {recorded:.2f}%)" if recorded is not None else f" (epoch {run.epoch})"
    print(f"bnn-eval: {run.checkpoint}{note}")
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
          f"on {result['images']:,} validation images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
