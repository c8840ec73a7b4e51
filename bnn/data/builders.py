"""Data set and data loader builders.

torchvision is imported lazily, inside the functions that need it, so
``import bnn.data`` stays light.
"""
import logging
import os
import statistics
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..hints import did_you_mean
from .synthetic import SYNTHETIC_MEAN, SYNTHETIC_STD, SyntheticShapes

__all__ = [
    "DEFAULT_DATASET", "DATASETS", "ALIASES", "DatasetNotFoundError", "dataset_info", "list_datasets",
    "build_datasets", "build_loaders", "set_epoch", "EpochShuffleSampler",
    "cifar_transforms", "imagenet_transforms", "mnist_transforms", "folder_transforms", "folder_image_size",
]

_log = logging.getLogger(__name__)

DEFAULT_DATASET = "synthetic_shapes"

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: name -> static facts the engine needs to build a model for it.
DATASETS: Dict[str, Dict[str, Any]] = {
    "synthetic_shapes": dict(num_classes=10, in_channels=3, image_size=32, mean=SYNTHETIC_MEAN, std=SYNTHETIC_STD),
    "cifar10": dict(num_classes=10, in_channels=3, image_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "cifar100": dict(num_classes=100, in_channels=3, image_size=32, mean=CIFAR100_MEAN, std=CIFAR100_STD),
    "mnist": dict(num_classes=10, in_channels=1, image_size=28, mean=MNIST_MEAN, std=MNIST_STD),
    "imagenet": dict(num_classes=1000, in_channels=3, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # generic image folders: num_classes = number of class folders (len(train_set.classes)),
    # image_size read from the images (folder_image_size)
    "imagefolder": dict(num_classes=None, in_channels=3, image_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set root is missing (and was not to be downloaded). The message is
    one line: the data set, where it looked, how to get the data."""


#: accepted alternative spellings
ALIASES = {"synthetic": "synthetic_shapes", "shapes": "synthetic_shapes", "folder": "imagefolder",
           "image_folder": "imagefolder", "cifar_10": "cifar10", "cifar_100": "cifar100"}


def list_datasets():
    """Names accepted by :func:`build_datasets`."""
    return list(DATASETS)


def _check_name(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}" + did_you_mean(key, list(DATASETS)))
    return key


def dataset_info(name: str) -> Dict[str, Any]:
    """``{"num_classes", "in_channels", "image_size", "mean", "std"}`` of a data
    set name (for ``imagefolder``, ``num_classes`` is None: use
    ``len(train_set.classes)``; ``image_size`` is None: it is read from the
    images, see :func:`folder_image_size`)."""
    return dict(DATASETS[_check_name(name)])


# ----------------------------------------------------------------- transforms
def cifar_transforms(mean, std, train: bool, augment: bool = True):
    """CIFAR standard: RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor
    + Normalize for training, ToTensor + Normalize for evaluation."""
    import torchvision.transforms as T

    tail = [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment:
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + tail)
    return T.Compose(tail)


def imagenet_transforms(train: bool, image_size: int = 224, augment: bool = True,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """ImageNet standard: RandomResizedCrop(224) + RandomHorizontalFlip for
    training; Resize(256) + CenterCrop(224) for evaluation (256 = 224 / 0.875,
    scaled with ``image_size``); then ToTensor + Normalize."""
    import torchvision.transforms as T

    tail = [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] + tail)
    return T.Compose([T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size)] + tail)


#: Images whose crop is at most this many pixels get CIFAR-style augmentation (:func:`folder_transforms`).
SMALL_IMAGE_SIZE = 64
#: Images are sampled from this many files at most to read the size of a folder's images.
_SIZE_SAMPLE = 64


def folder_transforms(train: bool, image_size: int, augment: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Transforms of an image folder whose crops are ``image_size`` pixels.

    Above :data:`SMALL_IMAGE_SIZE`: :func:`imagenet_transforms`. At or below it
    (CIFAR-, Tiny-ImageNet-sized images), where RandomResizedCrop's down-to-8%
    crops would leave a few pixels: Resize + CenterCrop to ``image_size`` (a
    no-op for images of that size), then for training the CIFAR augmentation
    (RandomCrop with ``image_size // 8`` pixels of zero padding, 4 at 32 px,
    + RandomHorizontalFlip); then ToTensor + Normalize.
    """
    if image_size > SMALL_IMAGE_SIZE:
        return imagenet_transforms(train, image_size, augment, mean, std)
    import torchvision.transforms as T

    steps = [T.Resize(image_size), T.CenterCrop(image_size)]
    if train and augment:
        steps += [T.RandomCrop(image_size, padding=max(1, image_size // 8)), T.RandomHorizontalFlip()]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def folder_image_size(folder: str, cap: int = 224) -> int:
    """The crop side for the images under ``folder``: the median shorter side of
    up to 64 of its image files (evenly spread over the sorted file list; only
    the headers are read), capped at ``cap`` (ImageNet's 224 for large photos)."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise DatasetNotFoundError(f"imagefolder: no image files ({', '.join(IMG_EXTENSIONS)}) under {folder!r}")
    step = max(1, len(files) // _SIZE_SAMPLE)
    sides = []
    for path in files[::step][:_SIZE_SAMPLE]:
        with Image.open(path) as image:
            sides.append(min(image.size))
    return int(min(cap, statistics.median_low(sides)))


def mnist_transforms():
    """ToTensor + Normalize((0.1307,), (0.3081,))."""
    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(MNIST_MEAN, MNIST_STD)])


# ------------------------------------------------------------------- datasets
def _default_root(name: str) -> str:
    base = os.environ.get("BNN_DATA_ROOT", "data")
    return os.path.join(base, name)


def _missing(name: str, looked: str, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{name} data set not found: looked for {looked!r}; {how}")


def build_datasets(name: str = DEFAULT_DATASET, root: Optional[str] = None, download: bool = False,
                   *, augment: bool = True, seed: int = 0, train_size: Optional[int] = None,
                   val_size: Optional[int] = None, image_size: Optional[int] = None,
                   num_classes: Optional[int] = None) -> Tuple[Dataset, Dataset]:
    """Builds ``(train_set, val_set)`` for a data set name.

    Args:
        name: ``"synthetic_shapes"`` (default, embedded, no download; alias ``"synthetic"``),
            ``"cifar10"``, ``"cifar100"``, ``"mnist"`` (torchvision),
            ``"imagenet"`` or ``"imagefolder"`` (alias ``"folder"``; ``root/train/<class>/*`` and
            ``root/val/<class>/*``).
        root: data directory; default ``$BNN_DATA_ROOT/<name>`` (``data/<name>``
            when the variable is unset). For CIFAR/MNIST it is torchvision's
            ``root`` (holding ``cifar-10-batches-py``, ``cifar-100-python`` or
            ``MNIST/raw``). Ignored by ``synthetic_shapes``.
        download: let torchvision download CIFAR/MNIST into ``root``. When False
            (default) a missing root raises :class:`DatasetNotFoundError`.
            ImageNet cannot be downloaded.
        augment: training augmentation (CIFAR: crop 32 pad 4 + flip; ImageNet:
            RandomResizedCrop + flip). The validation set is never augmented.
        seed: ``synthetic_shapes`` data seed.
        train_size, val_size: ``synthetic_shapes`` sizes (default 10000 / 2000);
            for the other data sets, if given, the first N items
            (``torch.utils.data.Subset``, which keeps no ``classes``).
        image_size: ``synthetic_shapes`` side (default 32), the ImageNet crop (default 224),
            or the ``imagefolder`` crop (default: read from the images by
            :func:`folder_image_size`, their median shorter side capped at 224,
            and logged; crops of at most 64 pixels get CIFAR-style
            augmentation, see :func:`folder_transforms`). The sets built carry
            it as ``image_size``.
        num_classes: ``synthetic_shapes`` only: use the first N shape classes (2..10).

    Every returned set (except a Subset) has ``.classes``; the number of
    classes is ``dataset_info(name)["num_classes"]`` or ``len(train_set.classes)``.
    """
    key = _check_name(name)
    if key == "synthetic_shapes":
        kw = dict(seed=seed, image_size=image_size or 32, num_classes=num_classes or 10)
        return (SyntheticShapes("train", size=train_size, **kw),
                SyntheticShapes("val", size=val_size, **kw))
    if num_classes is not None:
        raise ValueError(f"num_classes applies to synthetic_shapes only, not {key!r}")
    root = os.path.expanduser(str(root)) if root else _default_root(key)
    if key in ("cifar10", "cifar100", "mnist"):
        train_set, val_set = _torchvision_sets(key, root, download, augment)
    else:
        train_set, val_set = _folder_sets(key, root, download, augment, image_size)
    return _subset(train_set, train_size), _subset(val_set, val_size)


def _subset(ds: Dataset, n: Optional[int]) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    return torch.utils.data.Subset(ds, range(int(n)))


_TV = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": ("MNIST", os.path.join("MNIST", "raw"), "the four MNIST idx files (train/t10k images/labels)"),
}


def _torchvision_sets(key: str, root: str, download: bool, augment: bool):
    cls_name, sub, url = _TV[key]
    looked = os.path.join(root, sub)
    how = (f"pass download=True (bnn-train: DATA.DOWNLOAD=true) to fetch it into {root!r}, "
           f"or put {url} there")
    if not download and not os.path.isdir(looked):
        raise _missing(key, looked, how)
    if download:
        os.makedirs(root, exist_ok=True)
    import torchvision.datasets as D

    if key == "mnist":
        t_train = t_val = mnist_transforms()
    else:
        info = DATASETS[key]
        t_train = cifar_transforms(info["mean"], info["std"], train=True, augment=augment)
        t_val = cifar_transforms(info["mean"], info["std"], train=False)
    cls = getattr(D, cls_name)
    try:
        train_set = cls(root, train=True, transform=t_train, download=download)
        val_set = cls(root, train=False, transform=t_val, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
        raise _missing(key, looked, f"{how} ({str(exc).splitlines()[0]})") from None
    except OSError as exc:  # the download failed (no network, refused, disk full): urllib's URLError is an OSError
        reason = getattr(exc, "reason", None) or exc
        raise _missing(key, looked, f"downloading {url} failed ({reason}); put the file into {root!r} by hand") from None
    return train_set, val_set


def _folder_sets(key: str, root: str, download: bool, augment: bool, image_size: Optional[int]):
    how = ("ImageNet cannot be downloaded automatically; get ILSVRC2012 from https://image-net.org "
           "and lay it out as ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG")
    if key == "imagefolder":
        how = "lay the images out as ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg"
    for split in ("train", "val"):
        d = os.path.join(root, split)
        if not os.path.isdir(d):
            raise _missing(key, d, how + (" (download=True does not apply)" if download else ""))
    import torchvision.datasets as D

    info = DATASETS[key]
    mean, std = info["mean"], info["std"]
    if image_size is None and info["image_size"] is None:
        image_size = folder_image_size(os.path.join(root, "train"))
        _log.info("%s: %d-pixel crops, the median shorter side of the training images (pass image_size "
                  "to choose another)", key, image_size)
    image_size = int(image_size or info["image_size"])
    train_set = D.ImageFolder(os.path.join(root, "train"), folder_transforms(True, image_size, augment, mean, std))
    val_set = D.ImageFolder(os.path.join(root, "val"), folder_transforms(False, image_size, mean=mean, std=std))
    train_set.image_size = val_set.image_size = image_size
    return train_set, val_set


# -------------------------------------------------------------------- loaders
class EpochShuffleSampler(Sampler):
    """Shuffles with ``randperm(n)`` seeded by ``seed + epoch`` (call
    :meth:`set_epoch` each epoch, as with ``DistributedSampler``): the order of
    epoch ``e`` does not depend on how many epochs ran before in this process,
    so a resumed run sees exactly the batches of an uninterrupted one."""

    def __init__(self, data_source: Dataset, seed: int = 0):
        self.n = len(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def build_loaders(train_set: Dataset, val_set: Dataset, batch_size: int, workers: int = 0,
                  distributed: bool = False, seed: int = 0, *, train_sampler: Optional[Sampler] = None,
                  val_sampler: Optional[Sampler] = None, val_batch_size: Optional[int] = None,
                  pin_memory: Optional[bool] = None, drop_last: bool = False,
                  num_replicas: Optional[int] = None, rank: Optional[int] = None,
                  collate_fn: Optional[Callable] = None) -> Tuple[DataLoader, DataLoader]:
    """Builds ``(train_loader, val_loader)``.

    Training order: ``train_sampler`` if given; else with ``distributed=True`` a
    ``DistributedSampler(train_set, shuffle=True, seed=seed)`` (``num_replicas``
    / ``rank`` default to the initialised process group); else an
    :class:`EpochShuffleSampler` seeded with ``seed``. Validation: ``val_sampler``,
    else ``DistributedSampler(shuffle=False)`` when distributed (it pads the last
    batch by repeating a few items so every rank gets the same count), else
    sequential. ``batch_size`` is per process.

    Call :func:`set_epoch(train_loader, epoch) <set_epoch>` at the start of every
    epoch: it sets the sampler's epoch and reseeds the loader's generator (which
    seeds the worker processes' augmentation RNG), making epochs reproducible
    and resumable. ``pin_memory`` defaults to ``torch.cuda.is_available()``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if train_sampler is None:
        if distributed:
            from torch.utils.data.distributed import DistributedSampler

            train_sampler = DistributedSampler(train_set, num_replicas=num_replicas, rank=rank,
                                               shuffle=True, seed=seed)
        else:
            train_sampler = EpochShuffleSampler(train_set, seed=seed)
    if val_sampler is None and distributed:
        from torch.utils.data.distributed import DistributedSampler

        val_sampler = DistributedSampler(val_set, num_replicas=num_replicas, rank=rank, shuffle=False)
    gen = torch.Generator().manual_seed(int(seed))
    common = dict(num_workers=int(workers), pin_memory=pin_memory, collate_fn=collate_fn)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=train_sampler,
                              drop_last=drop_last, generator=gen, **common)
    train_loader.bnn_seed = int(seed)
    val_loader = DataLoader(val_set, batch_size=val_batch_size or batch_size, sampler=val_sampler,
                            shuffle=False, **common)
    return train_loader, val_loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Prepares ``loader`` for epoch ``epoch``: ``sampler.set_epoch(epoch)`` when the
    sampler has it, and reseeds ``loader.generator`` with ``seed + epoch`` (the
    base seed of worker processes is drawn from it)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(getattr(loader, "bnn_seed", 0) * 1_000_003 + int(epoch))
