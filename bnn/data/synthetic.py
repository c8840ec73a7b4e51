"""SyntheticShapes: an embedded, procedurally generated image data set.

Needs no download, so the quick start runs on any fresh machine. Ten classes
of shapes drawn at a random position, size (radius 5-11 px at 32x32) and
rotation, in a random colour, over a random colour-gradient background, with
pixel noise, brightness jitter and (on half the images) a distracting random
line. The classes are::

    disk, ring, square, square_frame, triangle, plus, half_disk,
    two_dots, striped_disk, checker_square

Some pairs are close (disk / half-disk / ring at small radius, square / frame /
checker), so a small CNN learns the set well above chance (10%) in a few CPU
minutes but does not reach 100% at once.

Deterministic: the images depend only on ``(seed, split, index)`` through a
private ``torch.Generator``; ``split="train"`` and ``split="val"`` draw from
different streams, so the two splits never share an image. Generation is
vectorised (about 0.5 s for 10,000 images on one CPU core).
"""
import math
from typing import Callable, List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from ..hints import did_you_mean

__all__ = ["SyntheticShapes", "SYNTHETIC_CLASSES", "SYNTHETIC_MEAN", "SYNTHETIC_STD"]

SYNTHETIC_CLASSES = (
    "disk", "ring", "square", "square_frame", "triangle",
    "plus", "half_disk", "two_dots", "striped_disk", "checker_square",
)
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
_DEFAULT_SIZE = {"train": 10000, "val": 2000, "test": 2000}


def _mask(k: int, u: torch.Tensor, v: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """Boolean mask of shape class ``k`` in shape-local coordinates (u, v),
    scaled so that the shape fits the unit disk; ``freq``: texture frequency."""
    if k in (0, 1, 6, 8):
        r2 = u * u + v * v
        if k == 0:  # disk
            return r2 < 1.0
        if k == 1:  # ring
            return (r2 < 1.0) & (r2 > 0.3025)
        if k == 6:  # half disk
            return (r2 < 1.0) & (v > 0.0)
        return (r2 < 1.0) & (torch.sin(u * freq) > 0)  # striped disk
    au, av = u.abs(), v.abs()
    if k in (2, 3, 9):
        box = torch.maximum(au, av)
        if k == 2:  # square
            return box < 0.8
        if k == 3:  # square frame
            return (box < 0.85) & (box > 0.5)
        return (box < 0.85) & (torch.sin(u * freq) * torch.sin(v * freq) > 0)  # checker square
    if k == 4:  # triangle
        return (v > -0.55) & (v < 1.0 - 1.732 * au)
    if k == 5:  # plus
        return ((au < 0.28) & (av < 1.0)) | ((av < 0.28) & (au < 1.0))
    # two dots
    v2 = v * v
    return (((au - 0.55) ** 2 + v2) < 0.16)


def generate_shapes(n: int, seed: int, image_size: int = 32, num_classes: int = 10,
                    offset: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generates ``n`` images; returns ``(images uint8 [n, 3, S, S], labels int64 [n])``.

    Labels are balanced (``i % num_classes`` before a seeded shuffle).
    ``offset`` selects an independent random stream (used for the splits).
    """
    if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SYNTHETIC_CLASSES)}], got {num_classes}")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(offset) * 7919 + 12345)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    S = int(image_size)
    out = torch.empty(n, 3, S, S, dtype=torch.uint8)
    coords = (torch.arange(S, dtype=torch.float32) + 0.5) / S * 32.0  # in "32-pixel" units
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    chunk = 2048
    for start in range(0, n, chunk):
        lab = labels[start:start + chunk]
        m = lab.numel()

        def rnd(*shape):
            return torch.rand(*shape, generator=g)

        radius = 6.0 + 6.0 * rnd(m)
        cx = 16.0 + (rnd(m) - 0.5) * 2.0 * (15.0 - radius * 0.7)
        cy = 16.0 + (rnd(m) - 0.5) * 2.0 * (15.0 - radius * 0.7)
        theta = rnd(m) * 2.0 * math.pi
        freq = (5.0 + 5.0 * rnd(m)).view(m, 1, 1)
        dx = xx.unsqueeze(0) - cx.view(m, 1, 1)
        dy = yy.unsqueeze(0) - cy.view(m, 1, 1)
        c, s = torch.cos(theta).view(m, 1, 1), torch.sin(theta).view(m, 1, 1)
        rr = radius.view(m, 1, 1)
        u = (dx * c + dy * s) / rr
        v = (-dx * s + dy * c) / rr
        mask = torch.empty(m, S, S, dtype=torch.bool)
        for k in range(num_classes):
            idx = (lab == k).nonzero().squeeze(1)
            if idx.numel():
                mask[idx] = _mask(k, u[idx], v[idx], freq[idx])
        mask = mask.unsqueeze(1)  # [m, 1, S, S]

        # background: random colour plus a random linear gradient
        bg = rnd(m, 3, 1, 1)
        gdir = rnd(m) * 2.0 * math.pi
        grad = (torch.cos(gdir).view(m, 1, 1) * (xx - 16) + torch.sin(gdir).view(m, 1, 1) * (yy - 16)) / 32.0
        grad = grad.unsqueeze(1) * (0.4 * rnd(m, 1, 1, 1))
        # foreground: brighter than a dark background, darker than a light one, tinted
        polarity = torch.where(bg.mean(dim=1, keepdim=True) > 0.5, -1.0, 1.0)
        delta = polarity * (0.35 + 0.25 * rnd(m, 1, 1, 1)) + 0.3 * (rnd(m, 3, 1, 1) - 0.5)
        fg = bg + delta
        img = torch.where(mask, fg, bg + grad)
        # distractor line on half of the images
        has_line = (rnd(m) < 0.3).view(m, 1, 1)
        lang = rnd(m) * math.pi
        loff = (rnd(m) - 0.5) * 24.0
        ldist = (torch.cos(lang).view(m, 1, 1) * (xx - 16) + torch.sin(lang).view(m, 1, 1) * (yy - 16)
                 - loff.view(m, 1, 1)).abs()
        line = ((ldist < 0.6) & has_line).unsqueeze(1)
        img = torch.where(line, rnd(m, 3, 1, 1), img)
        # brightness / contrast jitter and pixel noise
        contrast = 0.8 + 0.4 * rnd(m, 1, 1, 1)
        brightness = 0.5 + (rnd(m, 1, 1, 1) - 0.5) * 0.2
        img.sub_(0.5).mul_(contrast).add_(brightness)
        img.add_(torch.randn(m, 3, S, S, generator=g), alpha=0.06)
        img.clamp_(0, 1).mul_(255.0).add_(0.5)
        out[start:start + m] = img.to(torch.uint8)
    return out, labels


class SyntheticShapes(Dataset):
    """The embedded default data set (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        size: number of images (default 10,000 for train, 2,000 otherwise).
        seed: data seed; the same ``(seed, split, size, image_size)`` gives the same images.
        image_size: side in pixels (default 32).
        num_classes: use the first ``num_classes`` shape classes (2..10).
        transform: optional callable applied to the float image tensor.
        normalize: if True (default) items are ``(x / 255 - 0.5) / 0.25``; else in [0, 1].

    Items are ``(float tensor [3, S, S], int label)``. Attributes: ``data``
    (uint8 ``[N, 3, S, S]``), ``targets`` (list of int), ``classes`` (names).
    """

    def __init__(self, split: str = "train", size: Optional[int] = None, seed: int = 0,
                 image_size: int = 32, num_classes: int = 10,
                 transform: Optional[Callable] = None, normalize: bool = True):
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r} for SyntheticShapes" + did_you_mean(split, _SPLIT_OFFSET))
        self.split = split
        self.seed = int(seed)
        self.image_size = int(image_size)
        n = _DEFAULT_SIZE[split] if size is None else int(size)
        if n <= 0:
            raise ValueError(f"SyntheticShapes size must be > 0, got {n}")
        self.data, labels = generate_shapes(n, self.seed, self.image_size, num_classes,
                                            offset=_SPLIT_OFFSET[split])
        self.targets: List[int] = labels.tolist()
        self.classes: List[str] = list(SYNTHETIC_CLASSES[:num_classes])
        self.transform = transform
        self.normalize = bool(normalize)
        self._mean = torch.tensor(SYNTHETIC_MEAN).view(3, 1, 1)
        self._std = torch.tensor(SYNTHETIC_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        x = self.data[index].float().div_(255.0)
        if self.normalize:
            x = (x - self._mean) / self._std
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[index]

    def __repr__(self) -> str:
        return (f"SyntheticShapes(split={self.split!r}, size={len(self)}, seed={self.seed}, "
                f"image_size={self.image_size}, classes={len(self.classes)})")
