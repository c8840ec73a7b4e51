"""From a trained run to a shipped file: ``bnn-pack RUN_DIR -o model.pt``.

::

    bnn-pack experiments/quickstart -o quickstart.pt      # best.pth, packed, checked, saved

:func:`pack_run` rebuilds the run's fake-binarized model (:func:`bnn.load_trained`), packs it
(:func:`bnn.pack_binary_model`), runs both on one batch of the run's validation data and refuses
to save when the packed outputs differ from the fake-binarized ones by more than float rounding
(:class:`PackCheckError`), then writes the packed module with ``torch.save`` atomically. The file
needs only ``torch`` and ``bnn`` to load::

    model = torch.load("quickstart.pt", weights_only=False)   # an nn.Module in eval mode

It also reports the model's size (float32 against packed, :func:`bnn.summary`) and the speed-up of
the packed model over the fake-binarized one on that batch (medians of alternated timings).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["PackCheckError", "PackCheck", "PackReport", "check_packed", "pack_run", "main"]

#: packed and fake-binarized outputs of a sample agree when |diff| <= RTOL * max(1, max |fake|) (float rounding)
RTOL = 1e-4
#: the share of samples allowed to disagree through a sign tie (see :func:`check_packed`)
MAX_TIE_FRACTION = 0.05


class PackCheckError(RuntimeError):
    """The packed model's outputs differ from the fake-binarized model's; the message is one line."""


@dataclasses.dataclass
class PackReport:
    """What :func:`pack_run` measured: bytes (float32 / packed parameters, file), times per batch, max |diff|."""

    checkpoint: str
    output: str
    packed_layers: int
    batch: int
    float_bytes: int
    packed_bytes: int
    file_bytes: int
    fake_ms: float
    packed_ms: float
    max_abs_diff: float
    ties: int = 0

    @property
    def speedup(self) -> float:
        return self.fake_ms / self.packed_ms if self.packed_ms > 0 else float("inf")

    def lines(self):
        none = "" if self.packed_layers else " (no binarized layer: are its binarizers off at this epoch?)"
        return [
            f"packed {self.checkpoint} -> {self.output}: {self.packed_layers} layers with 1-bit weights{none}",
            f"size: {self.float_bytes:,} bytes float32, {self.packed_bytes:,} bytes packed "
            f"({self.float_bytes / max(self.packed_bytes, 1):.1f}x smaller); file {self.file_bytes:,} bytes",
            f"check: packed = fake-binarized on {self.batch} validation images (max |diff| {self.max_abs_diff:.2e}"
            + (f"; {self.ties} sign tie{'s' if self.ties > 1 else ''} flipped by rounding)" if self.ties else ")"),
            f"speed: {self.fake_ms:.2f} ms fake-binarized, {self.packed_ms:.2f} ms packed per batch of {self.batch} "
            f"({self.speedup:.2f}x, {torch.get_num_threads()} threads, {_kernel_name()})",
        ]


def _kernel_name() -> str:
    from .kernel import available_isas, kernel_available

    return f"native kernel, up to {available_isas()[-1]}" if kernel_available() else "pure-torch path"


class PackCheck(NamedTuple):
    """What :func:`check_packed` found: the max |diff| over the samples that agree, and the sign ties."""

    max_abs_diff: float
    ties: int


def check_packed(fake: nn.Module, packed: nn.Module, inputs: torch.Tensor, where: str = "the model") -> PackCheck:
    """Compare the packed and fake-binarized outputs on ``inputs``; raise :class:`PackCheckError` unless they agree.

    A sample agrees when its outputs differ by float rounding only (:data:`RTOL`). A binary network is
    discontinuous: a value that lands within rounding of a sign threshold (BatchNorm folded into the packed
    epilogue rounds differently) flips one bit, and that sample's outputs move by far more than rounding.
    Such sign ties are rare (``bnn-pack`` finds 2 among the first 64 validation images of the quick start's best checkpoint), so up to :data:`MAX_TIE_FRACTION`
    of the samples (at least one) may differ; more than that, or any NaN, is a packing error.
    """
    with torch.inference_mode():
        ref, out = fake(inputs), packed(inputs)
    if ref.shape != out.shape:
        raise PackCheckError(f"{where}: packed output has shape {list(out.shape)}, fake-binarized {list(ref.shape)}")
    if not ref.numel():
        return PackCheck(0.0, 0)
    per_sample = (out.float() - ref.float()).abs().reshape(len(ref), -1).max(dim=1).values
    limit = RTOL * max(1.0, float(ref.abs().max()))
    off = ~(per_sample <= limit)  # also catches NaN
    ties = int(off.sum())
    if ties > max(1, int(MAX_TIE_FRACTION * len(ref))) or bool(per_sample.isnan().any()):
        sample = int(off.nonzero()[0])
        raise PackCheckError(f"{where}: packed outputs differ from the fake-binarized ones on {ties} of {len(ref)} "
                             f"samples (max |diff| {float(per_sample.max()):.3g} > {limit:.3g}, first at sample "
                             f"{sample}); not saved")
    return PackCheck(float(per_sample[~off].max()) if ties < len(ref) else 0.0, ties)


def _median_ms(models, inputs: torch.Tensor, repeats: int):
    """Median milliseconds per forward of each model, timed alternately (after one warm-up each)."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model(inputs)
        for _ in range(repeats):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(inputs)
                times[i].append(1e3 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def pack_run(run: str, output: str, which: str = "best", batch_size: int = 64, repeats: int = 5) -> PackReport:
    """Pack the ``which`` checkpoint of the run ``run``, check it on a validation batch, save it to ``output``."""
    from .. import summary
    from ..engine.checkpoint import save_atomic
    from ..engine.run_dir import load_run, validation_loader
    from .layers import PackedLayer
    from .pack import pack_binary_model

    trained = load_run(run, which)
    fake = trained.model
    inputs = next(iter(validation_loader(trained.config, batch_size=batch_size, workers=0)))[0]
    packed = pack_binary_model(fake)
    check = check_packed(fake, packed, inputs, where=trained.checkpoint)
    sizes = summary(packed, tuple(inputs.shape[1:]), print_fn=None)
    fake_ms, packed_ms = _median_ms([fake, packed], inputs, repeats)
    save_atomic(packed, output)
    n_packed = sum(isinstance(m, PackedLayer) for m in packed.modules())
    return PackReport(trained.checkpoint, output, n_packed, int(inputs.shape[0]), sizes.float_bytes, sizes.bytes,
                      os.path.getsize(output), fake_ms, packed_ms, check.max_abs_diff, check.ties)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnn-pack", description="Pack a bnn-train run's model to 1-bit weights, check it, and save it.")
    parser.add_argument("run", metavar="RUN_DIR", help="the run's folder (EXPERIMENT.DIR/NAME) or a checkpoint file")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="where to save the packed model")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="which checkpoint (default: best)")
    parser.add_argument("--batch-size", type=int, default=64, help="validation images to check and time on (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards of each model (default 5)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bnn-pack``; returns the exit status (2 with one line on stderr on any failure)."""
    from ..engine.run_dir import RUN_ERRORS
    from .pack import UnsupportedLayerError

    args = build_parser().parse_args(argv)
    try:
        report = pack_run(args.run, args.output, args.which, args.batch_size, args.repeats)
    except RUN_ERRORS + (PackCheckError, UnsupportedLayerError) as exc:
        if os.environ.get("BNN_DEBUG"):
            raise
        print(f"bnn-pack: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(f"bnn-pack: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
