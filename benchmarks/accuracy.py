"""Accuracy of binary vs float networks: every preset and the best recipe, same budget, several seeds.

Networks: a small torchvision-style ResNet (conv-BN-ReLU stem, two stages of
one basic block each, ReLU after every block, global average pool, linear
classifier), so every binarized conv is fed by a ReLU, as in an ordinary
model. The stem conv, the classifier and the 1x1 downsample shortcut stay
float (:data:`bnn.presets.FLOAT_LAYERS`); every other conv is binarized.

Data sets (nothing is downloaded):

- ``synthetic``: :class:`bnn.data.SyntheticShapes` (embedded), 10 classes, 16x16;
- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 handwritten digits shipped
  inside the package; ``pip install scikit-learn``, the ``bench`` extra),
  a fixed 80/20 split.

Per data set and seed, a float network is pre-trained ``--pretrain-epochs``
(default ``--epochs``) epochs from scratch (Adam, cosine decay to 0, batch
128). Each binary run starts from those weights and trains ``--epochs`` more
(Adam, cosine decay, no weight decay on latent weights). The float row is the
pre-trained network (``--float-reference pretrained``, the default), or, with
``--float-reference same-budget``, that network trained ``--epochs`` more in
float, so that float and binary have both seen the same number of epochs:

- one row per preset of :mod:`bnn.presets`, trained with cross-entropy;
- ``two-step + KD``: the ``relu_friendly`` preset trained in two steps of half
  the budget each, binary activations first (weights float), then binary
  weights too (ReActNet's two-step schedule, Liu et al. 2020), with the
  pre-trained float network as teacher (KL distillation,
  :func:`bnn.engine.distill.kl_div_logits`).

Prints the mean top-1 over the seeds (the spread as min..max) and the gap to float::

    python benchmarks/accuracy.py [--epochs 10] [--pretrain-epochs N] [--seeds 0 1] [--width 16]
                                  [--datasets synthetic digits] [--train-size 3000] [--threads 2]
                                  [--recipes NAME ...] [--float-reference pretrained|same-budget]
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
import warnings
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import bnn
from bnn.engine.distill import kl_div_logits

BATCH = 128
BEST = "two-step + KD"


class BasicBlock(nn.Module):
    """torchvision's basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(in_channels: int, classes: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes),
    )


def synthetic(train_size: int, seed: int) -> Tuple[torch.Tensor, ...]:
    sets = [bnn.data.SyntheticShapes(split, size, seed=seed, image_size=16) for split, size in
            (("train", train_size), ("val", max(1000, train_size // 5)))]
    out = []
    for s in sets:
        x = s.data.float().div_(255.0)
        out += [(x - s._mean) / s._std, torch.tensor(s.targets)]
    return tuple(out)


def digits(train_size: int, seed: int) -> Tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the digits data set needs scikit-learn: pip install scikit-learn (or bnn[bench])") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))  # one fixed split for all seeds
    x, y = (x - x.mean()) / x.std(), y
    n_train = int(0.8 * len(y))
    return x[perm[:n_train]], y[perm[:n_train]], x[perm[n_train:]], y[perm[n_train:]]


DATASETS: Dict[str, Callable[[int, int], Tuple[torch.Tensor, ...]]] = {"synthetic": synthetic, "digits": digits}


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(500), y.split(500)))
    return 100.0 * correct / len(y)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
        teacher: nn.Module | None = None, kd_weight: float = 1.0) -> nn.Module:
    """Adam with cosine decay to 0 over ``epochs``; cross-entropy, or with a ``teacher``
    ``kd_weight * KL(teacher || model) + (1 - kd_weight) * CE``."""
    g = torch.Generator().manual_seed(seed)
    batches = math.ceil(len(y) / BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * batches)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(batches):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x[idx])
                loss = kd_weight * kl_div_logits(logits, target) + (1.0 - kd_weight) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def binary_copy(float_model: nn.Module, bconfig: bnn.BConfig) -> nn.Module:
    return bnn.prepare_binary_model(copy.deepcopy(float_model), bconfig, ignore_layers_name=bnn.presets.FLOAT_LAYERS)


def run(dataset: str, seed: int, args) -> Dict[str, float]:
    xtr, ytr, xva, yva = DATASETS[dataset](args.train_size, seed)
    torch.manual_seed(seed)
    pretrained = small_resnet(xtr.shape[1], int(ytr.max()) + 1, args.width)
    fit(pretrained, xtr, ytr, args.epochs if args.pretrain_epochs is None else args.pretrain_epochs, args.lr, seed)
    teacher = copy.deepcopy(pretrained).eval()
    float_model = pretrained
    if args.float_reference == "same-budget":  # like every binary run, --epochs more from the pre-trained weights
        float_model = fit(copy.deepcopy(pretrained), xtr, ytr, args.epochs, args.lr, seed)
    result = {"float": top1(float_model, xva, yva)}
    for name in args.recipes:
        torch.manual_seed(seed)
        if name == BEST:  # two steps of half the budget each, each with its own schedule
            model = binary_copy(pretrained, bnn.presets.relu_friendly())
            bnn.set_binarization(model, activations=True, weights=False)
            fit(model, xtr, ytr, args.epochs // 2, args.lr, seed, teacher, args.kd_weight)
            bnn.set_binarization(model, activations=True, weights=True)
            fit(model, xtr, ytr, args.epochs - args.epochs // 2, args.lr, seed, teacher, args.kd_weight)
        else:
            model = binary_copy(pretrained, bnn.presets.get_preset(name))
            fit(model, xtr, ytr, args.epochs, args.lr, seed)
        result[name] = top1(model, xva, yva)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="float epochs every binary run starts from (default: --epochs)")
    parser.add_argument("--float-reference", choices=["pretrained", "same-budget"], default="pretrained",
                        help="the float row: the pre-trained network, or it trained --epochs more like the binary runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage (the second has twice)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--train-size", type=int, default=3000, help="training images of the synthetic set")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--kd-weight", type=float, default=1.0, help="weight of the distillation loss (1: KL only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=bnn.presets.preset_names() + [BEST],
                        help=f"presets and/or {BEST!r}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # the dead-input warning: the table shows it as chance

    start = time.perf_counter()
    header = f"{'data set':<10} {'recipe':<15} {'float top-1':>15} {'binary top-1':>15} {'gap':>6}"
    lines = [header, "-" * len(header)]
    for dataset in args.datasets:
        runs = [run(dataset, seed, args) for seed in args.seeds]
        floats = [r["float"] for r in runs]
        for name in args.recipes:
            binary = [r[name] for r in runs]
            gap = statistics.mean(floats) - statistics.mean(binary)
            lines.append(f"{dataset:<10} {name:<15} {_spread(floats):>15} {_spread(binary):>15} {gap:>6.1f}")
    print(f"small ResNet (width {args.width}), {args.epochs} epochs per run, float reference {args.float_reference}, "
          f"seeds {args.seeds}, "
          f"{args.threads} threads; top-1 % on the validation split, mean (min..max)")
    print("\n".join(lines))
    print(f"total {time.perf_counter() - start:.0f} s")


def _spread(values: List[float]) -> str:
    return f"{statistics.mean(values):.1f} ({min(values):.0f}..{max(values):.0f})"


if __name__ == "__main__":
    main()
