"""Training-step cost of fake binarization: binarized vs float CIFAR ResNet-18.

Model: torchvision's ``resnet18`` (random init) with a 3x3 stride-1 first conv
and no max pool (the usual CIFAR stem), 10 classes. Binarized copy: sign
activations (``BasicInputBinarizer``), ``XNORWeightBinarizer(center_weights=True)``,
per-output-channel ``BasicScaleBinarizer``; first conv and fc stay float.

One step = forward + cross-entropy + backward + SGD step, batch 64, 32x32,
``torch.set_num_threads(2)``. Float and binary steps are interleaved (so drift
of the machine hits both alike); the ratio of medians is printed.

Activation memory: what the process holds more once the forward has built the
autograd graph (resident set size after minus before the forward, Linux),
for each model, and the ratio binary/float. It is measured in a fresh child
process started with ``MALLOC_MMAP_THRESHOLD_=65536``, so that every large
block is mmapped and unmapped when freed and the RSS follows live memory.

    python benchmarks/train_step.py [--reps 15] [--warmup 3] [--batch 64] [--threads 2] [--cpu-time] [--profile]

On a machine shared with other jobs, wall-clock medians are noisy; ``--cpu-time``
measures the CPU time the process itself used.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import bnn
from bnn.ops import BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def binarize(model: nn.Module) -> nn.Module:
    bconfig = bnn.BConfig(
        activation_pre_process=BasicInputBinarizer,
        activation_post_process=BasicScaleBinarizer,
        weight_pre_process=XNORWeightBinarizer.with_args(center_weights=True),
    )
    return bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["_first_", "_last_"])


CLOCK = time.perf_counter  # --cpu-time switches to time.process_time (robust to a machine shared with other jobs)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        t0 = CLOCK()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return CLOCK() - t0

    return step


def activation_memory(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes the process holds more after the forward (graph and saved tensors alive) than before it."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    F.cross_entropy(model(x), y).backward()  # lazy initialisations and .grad buffers happen here, not below
    before = rss()
    loss = F.cross_entropy(model(x), y)
    held = rss() - before
    loss.backward()
    model.zero_grad(set_to_none=False)
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time instead of wall clock")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one binary step")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    warnings.simplefilter("ignore", RuntimeWarning)  # the dead-input warning: this is a timing benchmark
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    float_model = cifar_resnet18().train()
    binary_model = binarize(copy.deepcopy(float_model)).train()
    if args.memory_only:  # the child process of the activation-memory measurement
        x = torch.randn(args.batch, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch,))
        models = (("float", float_model), ("binary", binary_model))
        print(json.dumps({name: activation_memory(model, x, y) for name, model in models}))
        return
    n_bin = sum(isinstance(m, bnn.layers.BinaryLayerMixin) and not m.applied_bconfig.is_float for m in binary_model.modules())
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))

    steps = {"float": make_step(float_model, x, y), "binary": make_step(binary_model, x, y)}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for i in range(args.reps):
        order = list(steps) if i % 2 == 0 else list(reversed(list(steps)))
        for name in order:
            times[name].append(steps[name]())

    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"CIFAR ResNet-18, batch {args.batch}, 32x32, {args.threads} threads, {args.reps} interleaved reps, "
        f"{n_bin} binarized layers, {'process CPU time' if args.cpu_time else 'wall clock'}"
    )
    print(f"float  step: median {med['float'] * 1e3:.1f} ms (min {min(times['float']) * 1e3:.1f})")
    print(f"binary step: median {med['binary'] * 1e3:.1f} ms (min {min(times['binary']) * 1e3:.1f})")
    print(f"ratio binary/float: {med['binary'] / med['float']:.3f}x (target <= 1.25x)")
    if sys.platform.startswith("linux"):
        child = subprocess.run([sys.executable, __file__, "--memory-only", "--batch", str(args.batch),
                                "--threads", str(args.threads)], env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
                               capture_output=True, text=True, check=True)
        mem = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"activation memory: float {mem['float'] / 2**20:.0f} MiB, binary {mem['binary'] / 2**20:.0f} MiB, "
              f"ratio {mem['binary'] / mem['float']:.2f}x (target <= 1.3x)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps["binary"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
