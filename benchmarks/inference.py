"""Packed (xnor-popcount) inference against float32, side by side, on N CPU threads (2 by default).

    python benchmarks/inference.py [--threads 2] [--reps 15] [--batches 1 8]

1. Every binary conv shape of ResNet-18 at ImageNet 224 (the 3x3 convs and the
   1x1 stride-2 downsamples): a packed layer (sign + bit packing of the input,
   xnor-popcount, per-channel scale) against torch's float conv of the same
   shape (the faster of NCHW and channels-last input, oneDNN), batch 1 and 8.
2. The whole torchvision ResNet-18 (first conv and fc float, the rest packed)
   against the float model.

Timings are medians of interleaved repetitions (float, packed, float, ...).
The packed layer's input is channels-last, as it is inside a packed network
(its output is channels-last and BatchNorm/ReLU/add keep that layout).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import available_isas, kernel_available, pack_binary_model

# (in, out, input size, stride, kernel) of ResNet-18's binarized convs at 224x224
SHAPES = [
    (64, 64, 56, 1, 3),
    (64, 128, 56, 2, 3),
    (128, 128, 28, 1, 3),
    (128, 256, 28, 2, 3),
    (256, 256, 14, 1, 3),
    (256, 512, 14, 2, 3),
    (512, 512, 7, 1, 3),
    (64, 128, 56, 2, 1),
    (128, 256, 28, 2, 1),
    (256, 512, 14, 2, 1),
]


def _bconfig():
    return bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def interleaved(fns, reps, warmup=2):
    """Median seconds of each function, the functions run in turn ``reps`` times."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = _clock()
            fn()
            times[i].append(_clock() - t0)
    return [statistics.median(t) for t in times]


@torch.no_grad()
def bench_layers(batches, reps):
    print(f"{'layer (in->out, HxW, stride, k)':<34} {'batch':>5} {'float ms':>9} {'packed ms':>9} {'speedup':>8}")
    ratios3 = []
    for n in batches:
        for cin, cout, hw, s, k in SHAPES:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False).eval()
            packed = pack_binary_model(bnn.prepare_binary_model(conv, _bconfig()).eval())
            x = torch.randn(n, cin, hw, hw)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            t_nchw, t_cl, t_bin = interleaved([lambda: conv(x), lambda: conv(x_cl), lambda: packed(x_cl)], reps)
            t_float = min(t_nchw, t_cl)
            ratio = t_float / t_bin
            if k == 3:
                ratios3.append(ratio)
            name = f"{cin}->{cout}, {hw}x{hw}, s{s}, {k}x{k}"
            print(f"{name:<34} {n:>5} {t_float * 1e3:>9.3f} {t_bin * 1e3:>9.3f} {ratio:>7.1f}x")
    print(f"3x3 binary convs: speedup min {min(ratios3):.1f}x, median {statistics.median(ratios3):.1f}x")


@torch.no_grad()
def bench_resnet18(batches, reps):
    import torchvision

    float_model = torchvision.models.resnet18().eval()
    fake = bnn.prepare_binary_model(torchvision.models.resnet18(), _bconfig(),
                                    ignore_layers_name=["_first_", "_last_"]).eval()
    packed = pack_binary_model(fake)
    for n in batches:
        x = torch.randn(n, 3, 224, 224)
        t_float, t_packed = interleaved([lambda: float_model(x), lambda: packed(x)], max(3, reps // 2), warmup=1)
        print(f"ResNet-18 224x224 batch {n}: float {t_float * 1e3:.1f} ms, packed {t_packed * 1e3:.1f} ms, "
              f"speedup {t_float / t_packed:.2f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time (default) or process CPU time (steadier on a shared machine, with --threads 1)")
    parser.add_argument("--skip-model", action="store_true", help="only the per-layer table")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, native kernel: "
          f"{kernel_available()} (ISAs {available_isas()}, best used)")
    bench_layers(args.batches, args.reps)
    if not args.skip_model:
        bench_resnet18(args.batches, args.reps)


if __name__ == "__main__":
    main()
