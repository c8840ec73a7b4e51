"""torchvision's ResNet-18 binarized as the README shows it: float, plain sign inputs, and the documented fix.

Model: ``torchvision.models.resnet18(weights=None, num_classes=10)`` exactly as
torchvision builds it (7x7 stride-2 stem, max pool, ReLU in front of every
conv), on the embedded :class:`bnn.data.SyntheticShapes` (10 classes, 32x32,
chance 10 %). Every binary version keeps :data:`bnn.presets.FLOAT_LAYERS`
float (stem, classifier, 1x1 downsample shortcuts). Runs, same budget
(``--epochs`` passes over ``--train-size`` images, Adam lr 1e-3 with cosine
decay to 0 in each phase, batch 64):

- ``float``: the network as torchvision builds it;
- ``plain``: :func:`bnn.presets.xnor_net` from random weights (sign inputs: the
  ReLU in front makes every binarized conv see a constant +1);
- ``scratch``: the README's one call, :func:`bnn.presets.relu_friendly` (learned
  thresholds and Bi-Real Net's real shortcut around every binarized conv) from
  random weights, trained like the float run;
- ``no_shortcut``: the same without the shortcut, ``relu_friendly(shortcut=False)``;
- ``fix``: float for the first half of the epochs, then ``relu_friendly`` on
  those weights for the second half, distilled from the float network
  (ReActNet's distributional loss, :func:`bnn.engine.distill.kl_div_logits`;
  Liu et al. 2020).

``--small-stem`` replaces the 7x7 stride-2 stem conv by a 3x3 stride-1 one (the
usual change for 32x32 images; the max pool stays), so the last stage runs on
2x2 instead of 1x1 maps, for every run.

Prints top-1 % on 1,000 validation images for each, chance, and the wall time
of each run. ``--sensitivity`` prints instead how many binarized input bits
change, at initialisation, when the same images share their batch with other
images (see :func:`sensitivity`). At 1 thread on an idle 2-core AMD EPYC, two
benchmarks side by side, each run took 28 to 38 s (``--small-stem``: 76 to 89 s)::

    python benchmarks/relu_resnet18.py [--epochs 4] [--train-size 3000] [--threads 2] [--seed 0] [--small-stem]
                                        [--runs float plain scratch no_shortcut fix] [--sensitivity]
"""
from __future__ import annotations

import argparse
import copy
import functools
import time
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

import bnn

import accuracy  # benchmarks/accuracy.py: the same data tensors, training loop and top-1

BATCH = 64
LR = 1e-3


def resnet18(small_stem: bool = False) -> nn.Module:
    """torchvision's ``resnet18(weights=None, num_classes=10)``; ``small_stem``: a 3x3 stride-1 stem conv."""
    from torchvision.models import resnet18 as torchvision_resnet18

    model = torchvision_resnet18(weights=None, num_classes=10)
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    return model


Net = Callable[[], nn.Module]  # builds the run's float network


def binary(model: nn.Module, bconfig: bnn.BConfig) -> nn.Module:
    return bnn.prepare_binary_model(model, bconfig, ignore_layers_name=bnn.presets.FLOAT_LAYERS)


def train_float(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, net: Net) -> nn.Module:
    return fit(net(), x, y, epochs, seed)


def train_plain_sign(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, net: Net) -> nn.Module:
    return fit(binary(net(), bnn.presets.xnor_net()), x, y, epochs, seed)


def train_relu_friendly_from_scratch(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                                     net: Net) -> nn.Module:
    return fit(binary(net(), bnn.presets.relu_friendly()), x, y, epochs, seed)


def train_relu_friendly_without_shortcut(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                                         net: Net) -> nn.Module:
    return fit(binary(net(), bnn.presets.relu_friendly(shortcut=False)), x, y, epochs, seed)


def train_relu_friendly_from_float(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                                   net: Net) -> nn.Module:
    """Float for half the budget, then binarized and distilled from that float network."""
    float_model = fit(net(), x, y, epochs // 2, seed)
    teacher = copy.deepcopy(float_model).eval()
    return fit(binary(float_model, bnn.presets.relu_friendly()), x, y, epochs - epochs // 2, seed, teacher)


RUNS: Dict[str, Tuple[str, Callable[..., nn.Module]]] = {
    "float": ("float", train_float),
    "plain": ("plain sign (xnor_net)", train_plain_sign),
    "scratch": ("relu_friendly, from scratch", train_relu_friendly_from_scratch),
    "no_shortcut": ("relu_friendly(shortcut=False)", train_relu_friendly_without_shortcut),
    "fix": ("relu_friendly, float start + KD", train_relu_friendly_from_float),
}


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
        teacher: Optional[nn.Module] = None) -> nn.Module:
    """Adam (lr 1e-3) with cosine decay to 0 over ``epochs``, batch 64; cross-entropy, or with a
    ``teacher`` the KL divergence to its softmax (ReActNet's distillation, :func:`kl_div_logits`):
    the training loop of ``benchmarks/accuracy.py``."""
    return accuracy.fit(model, x, y, epochs, LR, seed, teacher, batch=BATCH)


def sensitivity(x: torch.Tensor, seed: int, net: Net) -> None:
    """How much a binarized layer's input bits depend on the rest of the batch, at initialisation.

    The first 32 images go through the network twice in training mode, once with
    32 other images, once with 32 more others (batch-norm statistics differ a
    little, nothing else does). Printed: for each binarized conv, the fraction
    of its +-1 inputs that differ between the two passes, and the relative
    change ||f1 - f2|| / ||f1|| of the pooled features the classifier reads
    (for float as well).
    """
    for label, make in (("float", resnet18),
                        ("relu_friendly", lambda: binary(net(), bnn.presets.relu_friendly())),
                        ("no shortcut", lambda: binary(net(), bnn.presets.relu_friendly(shortcut=False)))):
        torch.manual_seed(seed)
        model = make().train()
        seen: Dict[str, torch.Tensor] = {}
        watched = [(n, m) for n, m in model.named_modules() if n.endswith("activation_pre_process")]
        for name, module in watched + [("features", model.avgpool)]:
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()[:32].clone()))
        passes = []
        for others in (x[32:64], x[64:96]):
            model(torch.cat([x[:32], others]))
            passes.append(dict(seen))
        first, second = passes
        flips = [f"{(first[n] != second[n]).float().mean().item():.2f}" for n, _ in watched]
        change = ((first["features"] - second["features"]).norm() / first["features"].norm()).item()
        print(f"{label:<14} features change {change:4.2f}" + (f"; bits flipped, binarized conv 1..{len(flips)}: "
                                                              + " ".join(flips) if flips else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--small-stem", action="store_true", help="a 3x3 stride-1 stem conv instead of 7x7 stride 2")
    parser.add_argument("--sensitivity", action="store_true",
                        help="only print how much the binarized inputs depend on the rest of the batch at initialisation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = functools.partial(resnet18, small_stem=args.small_stem)
    warnings.simplefilter("ignore", RuntimeWarning)  # plain sign's dead-input warning: the table shows it as chance

    xtr, ytr, xva, yva = accuracy.synthetic(args.train_size, args.seed, image_size=32, val_size=1000)
    if args.sensitivity:
        sensitivity(xtr, args.seed, net)
        return
    stem = ", 3x3 stride-1 stem" if args.small_stem else ""
    print(f"torchvision resnet18 (weights=None, num_classes=10{stem}), SyntheticShapes 32x32: {args.train_size} training "
          f"images, {args.epochs} epochs, batch {BATCH}, Adam lr {LR:g} cosine, seed {args.seed}, "
          f"{args.threads} threads; top-1 % on 1,000 validation images, chance 10.0")
    for key in args.runs:
        label, train = RUNS[key]
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = train(xtr, ytr, args.epochs, args.seed, net)
        print(f"{label:<32} top-1 {accuracy.top1(model, xva, yva):5.1f}   {time.perf_counter() - start:5.0f} s", flush=True)


if __name__ == "__main__":
    main()
