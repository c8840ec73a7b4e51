"""Accuracy of binary vs float networks: every preset and the best recipe, same budget, several seeds.

Networks: a small ResNet (conv-BN-act stem, two stages of one block each,
global average pool, linear classifier) built from the blocks of
:mod:`bnn.models.resnet`; float and binary runs use the SAME network. The stem
conv, the classifier and the 1x1 downsample shortcut stay float
(:data:`bnn.presets.FLOAT_LAYERS`, as XNOR-Net, Bi-Real Net and ReActNet
keep them); every other conv is binarized. ``--block``:

- ``bn_first`` (default): per conv ``PReLU(conv(BN(x)) + x)``, a shortcut
  around every conv (Bi-Real Net, Liu et al. 2018) and BatchNorm right before
  the sign (XNOR-Net's order), so every binarizer sees a zero-centred input;
- ``bireal``: Bi-Real Net's ``PReLU(BN(conv(x)) + x)`` around every conv;
- ``basic``: torchvision's basic block with ReLU, where every binarized conv is
  fed by a ReLU, as in an ordinary model.

Data sets (nothing is downloaded):

- ``synthetic``: :class:`bnn.data.SyntheticShapes` (embedded), 10 classes,
  ``--image-size`` pixels, ``--train-size`` training images (10,000 by default, the set's own
  default size), 2,000 validation images;
- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 handwritten digits shipped
  inside the package; ``pip install scikit-learn``, the ``bench`` extra),
  a fixed 80/20 split.

Budget rule: every row trains the same number of epochs in total, float
pre-training included. With ``P = --pretrain-epochs`` and ``B = --epochs``:

- the binary pipelines train ``P`` float epochs, then ``B`` epochs binary,
  starting from those float weights (the usual start of a binary network);
- the float row (``--float-reference continued``, the default) is the same
  ``P``-epoch float network trained ``B`` more epochs in float; with
  ``scratch`` it is one float run of ``P + B`` epochs from scratch
  (one cosine schedule). Either way float and binary see ``P + B`` epochs.

Every run: Adam, batch 128, cosine decay to 0 over each step's epochs, no
weight decay (none on the latent binary weights, as Bi-Real Net and ReActNet
advise); peak learning rate ``--lr`` (1e-2) for the float steps and
``--binary-lr`` (1e-2) for the binary ones. Both were chosen on the synthetic
set (one seed, width 16, 3,000 images): at 4e-3 the 60-epoch float network ends about 5 points lower
(75.4 against 80.8 %) and the binary runs 2 to 8 points lower (the latent
weights of a sign must move far enough to flip it). Rows:

- one row per preset of :mod:`bnn.presets`, each trained the same plain way
  (cross-entropy, one step of ``B`` epochs);
- ``two-step + KD``, the best recipe: the ``--best-preset`` (``nncf``: on these
  networks, synthetic set, one seed, width 16, 3,000 images, it beat ``relu_friendly``
  by 9 points in this recipe, 66.0 against 57.3 %), trained in two steps
  (ReActNet's two-step schedule, Liu et al. 2020): ``round(--split * B)`` epochs
  with binary activations and float weights, then the rest with binary weights
  too, each step with its own cosine schedule; the loss is distillation from
  the ``P``-epoch float network (Hinton et al. 2015, "Distilling the Knowledge
  in a Neural Network"): ``w * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - w) * CE``
  with ``w = --kd-weight`` and ``T = --temperature``
  (:func:`bnn.engine.distill.kl_div_logits`).

Prints the mean top-1 over the seeds (the spread as min..max) and the gap to float::

    python benchmarks/accuracy.py [--epochs 20] [--pretrain-epochs 40] [--seeds 0 1] [--width 32]
                                  [--block bn_first|bireal|basic] [--datasets synthetic digits]
                                  [--image-size 16] [--train-size 10000] [--threads 2]
                                  [--lr 1e-2] [--binary-lr 1e-2] [--best-preset nncf]
                                  [--split 0.5] [--kd-weight 1] [--temperature 1]
                                  [--recipes NAME ...] [--float-reference continued|scratch] [--train-top1]

The defaults train long enough that float saturates on the synthetic set:
the 60-epoch float network fits its training images (100 % top-1), and at lr
4e-3 (seed 0, width 16, 3,000 images) its validation top-1 moved 2 points from 40 to 60 epochs
(73.2 to 75.4 %), where the ``basic`` block moved 13 from 20 to 40.

Width 32 and 10,000 training images are the defaults because the binary networks need both: at
width 16 on 3,000 images no binary network fitted its training images (72 % at best) and the best
recipe ended 13.3 points below float; width 32 on 3,000 images left 6.8 points, width 32 on
10,000 images 1.6 (two seeds; the README has the table and the trials between).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import bnn
from bnn.engine.distill import kl_div_logits
from bnn.models.common import check_choice, init_weights, make_activation
from bnn.models.resnet import BasicBlock, DoubleSkipBlock, make_downsample

BATCH = 128
BEST = "two-step + KD"
FLOAT = "float"
TRAIN = "(train)"  # --train-top1: the key suffix of a row's top-1 on its training images
NET_BLOCKS = ("bn_first", "bireal", "basic")
#: one training step of a pipeline: (what is binary, epochs); "float" = nothing, "activations" = the
#: inputs of the binary convs only, "binary" = inputs and weights
Step = Tuple[str, int]


class SmallResNet(nn.Module):
    """Stem conv-BN-act, stage 1 (``width`` channels), stage 2 (``2 * width``, stride 2), pool, linear."""

    def __init__(self, in_channels: int, classes: int, width: int, block: str = "bn_first",
                 activation: Optional[str] = None) -> None:
        super().__init__()
        check_choice(block, NET_BLOCKS, "block")
        activation = activation or ("relu" if block == "basic" else "prelu")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  make_activation(activation, width))
        stages = []
        for cin, cout, stride in ((width, width, 1), (width, 2 * width, 2)):
            downsample = make_downsample(cin, cout, stride, fp_downsample=False)
            stages.append(BasicBlock(cin, cout, stride, downsample, activation) if block == "basic" else
                          DoubleSkipBlock(cin, cout, stride, downsample, activation, bn_first=block == "bn_first"))
        self.layer1, self.layer2 = stages
        self.fc = nn.Linear(2 * width, classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def pipelines(recipes: List[str], pretrain_epochs: int, epochs: int, split: float = 0.5,
              float_reference: str = "continued") -> Dict[str, List[Step]]:
    """The training steps of the float row and of each recipe (the budget rule of the module docstring).

    Every pipeline starts with the same ``pretrain_epochs`` float epochs (the float row
    with ``float_reference="scratch"``: one float step of the whole budget)."""
    pre = [(FLOAT, pretrain_epochs)] if pretrain_epochs else []
    plans = {FLOAT: pre + [(FLOAT, epochs)] if float_reference == "continued" else
             [(FLOAT, pretrain_epochs + epochs)]}
    for name in recipes:
        if name == BEST:
            first = min(max(round(split * epochs), 0), epochs)
            plans[name] = pre + [("activations", first), ("binary", epochs - first)]
        else:
            plans[name] = pre + [("binary", epochs)]
    return {name: [step for step in plan if step[1] > 0] for name, plan in plans.items()}


def synthetic(train_size: int, seed: int, image_size: int = 16, val_size: int = 2000) -> Tuple[torch.Tensor, ...]:
    """The embedded shapes set as normalised tensors: ``train_size`` training and ``val_size`` validation images."""
    out = []
    for split, size in (("train", train_size), ("val", val_size)):
        s = bnn.data.SyntheticShapes(split, size, seed=seed, image_size=image_size)
        out += [(s.data.float().div_(255.0) - s._mean) / s._std, torch.tensor(s.targets)]
    return tuple(out)


def digits(train_size: int, seed: int, image_size: int = 8) -> Tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the digits data set needs scikit-learn: pip install scikit-learn (or bnn[bench])") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))  # one fixed split for all seeds
    x = (x - x.mean()) / x.std()
    n_train = int(0.8 * len(y))
    return x[perm[:n_train]], y[perm[:n_train]], x[perm[n_train:]], y[perm[n_train:]]


DATASETS: Dict[str, Callable[..., Tuple[torch.Tensor, ...]]] = {"synthetic": synthetic, "digits": digits}


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(500), y.split(500)))
    return 100.0 * correct / len(y)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
        teacher: Optional[nn.Module] = None, kd_weight: float = 1.0, temperature: float = 1.0,
        batch: int = BATCH) -> nn.Module:
    """Adam with cosine decay to 0 over ``epochs``, batches of ``batch``; cross-entropy, or with a ``teacher``
    ``kd_weight * kl_div_logits(model, teacher, temperature) + (1 - kd_weight) * CE``."""
    g = torch.Generator().manual_seed(seed)
    batches = math.ceil(len(y) / batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * batches)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(batches):
            idx = perm[i * batch:(i + 1) * batch]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x[idx])
                loss = kd_weight * kl_div_logits(logits, target, temperature) + (1.0 - kd_weight) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def preset_for(name: str, block: str) -> bnn.BConfig:
    """The preset ``name``; ``relu_friendly`` adds its own shortcut around each conv only to the ``basic``
    block, the one block without such a shortcut."""
    return bnn.presets.get_preset(name, **({"shortcut": False} if name == "relu_friendly" and block != "basic" else {}))


def run(dataset: str, seed: int, args) -> Dict[str, float]:
    """Top-1 of the float row and of every recipe of ``args.recipes`` for one data set and seed."""
    xtr, ytr, xva, yva = DATASETS[dataset](args.train_size, seed, args.image_size)
    plans = pipelines(args.recipes, args.pretrain_epochs, args.epochs, args.split, args.float_reference)

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        return SmallResNet(xtr.shape[1], int(ytr.max()) + 1, args.width, args.block)

    pretrained = fresh()
    if args.pretrain_epochs:
        fit(pretrained, xtr, ytr, args.pretrain_epochs, args.lr, seed)
    teacher = copy.deepcopy(pretrained).eval()
    result = {}
    for name, plan in plans.items():
        shared = plan[:1] == [(FLOAT, args.pretrain_epochs)]  # starts from the shared pre-trained network
        model = copy.deepcopy(pretrained) if shared else fresh()
        if name != FLOAT:
            preset = preset_for(args.best_preset if name == BEST else name, args.block)
            model = bnn.prepare_binary_model(model, preset, ignore_layers_name=bnn.presets.FLOAT_LAYERS)
        torch.manual_seed(seed)
        for what, epochs in plan[1:] if shared else plan:
            if name != FLOAT:
                bnn.set_binarization(model, activations=True, weights=what == "binary")
            lr = args.lr if what == FLOAT else args.binary_lr
            fit(model, xtr, ytr, epochs, lr, seed, teacher if name == BEST else None, args.kd_weight, args.temperature)
        result[name] = top1(model, xva, yva)
        if getattr(args, "train_top1", False):  # does the network fit its training images?
            result[f"{name} {TRAIN}"] = top1(model, xtr, ytr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="binary epochs B after the float pre-training")
    parser.add_argument("--pretrain-epochs", type=int, default=40, help="float epochs P every pipeline starts with")
    parser.add_argument("--float-reference", choices=["continued", "scratch"], default="continued",
                        help="float row: the pre-trained network trained B more epochs, or one run of P + B epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage (the second has twice)")
    parser.add_argument("--block", default="bn_first", choices=NET_BLOCKS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--image-size", type=int, default=16, help="side of the synthetic images")
    parser.add_argument("--train-size", type=int, default=10000, help="training images of the synthetic set")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate of the float steps")
    parser.add_argument("--binary-lr", type=float, default=1e-2, help="peak learning rate of the binary steps")
    parser.add_argument("--best-preset", default="nncf", choices=bnn.presets.preset_names(),
                        help=f"the preset {BEST!r} trains")
    parser.add_argument("--split", type=float, default=0.5, help=f"{BEST}: share of B with binary activations only")
    parser.add_argument("--kd-weight", type=float, default=1.0, help="weight of the distillation loss (1: KL only)")
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation temperature T")
    parser.add_argument("--train-top1", action="store_true",
                        help="also print each row's top-1 on its training images (does the network fit them?)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=bnn.presets.preset_names() + [BEST],
                        help=f"presets and/or {BEST!r}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # the dead-input warning: the table shows it as chance

    start = time.perf_counter()
    header = f"{'data set':<10} {'recipe':<15} {'float top-1':>15} {'binary top-1':>15} {'gap':>6}"
    if args.train_top1:
        header += f" {'float train':>15} {'binary train':>15}"
    lines = [header, "-" * len(header)]
    for dataset in args.datasets:
        runs = [run(dataset, seed, args) for seed in args.seeds]
        floats = [r[FLOAT] for r in runs]
        for name in args.recipes:
            binary = [r[name] for r in runs]
            gap = statistics.mean(floats) - statistics.mean(binary)
            line = f"{dataset:<10} {name:<15} {_spread(floats):>15} {_spread(binary):>15} {gap:>6.1f}"
            if args.train_top1:
                line += "".join(f" {_spread([r[f'{row} {TRAIN}'] for r in runs]):>15}" for row in (FLOAT, name))
            lines.append(line)
    print(f"small ResNet ({args.block} blocks, width {args.width}), {args.pretrain_epochs} float + {args.epochs} "
          f"binary epochs (float row: {args.pretrain_epochs + args.epochs} float epochs, {args.float_reference}), "
          f"synthetic {args.image_size}x{args.image_size} x {args.train_size}, seeds {args.seeds}, "
          f"{args.threads} threads; top-1 % on the validation split, mean (min..max)")
    print("\n".join(lines))
    print(f"total {time.perf_counter() - start:.0f} s")


def _spread(values: List[float]) -> str:
    return f"{statistics.mean(values):.1f} ({min(values):.0f}..{max(values):.0f})"


if __name__ == "__main__":
    main()
