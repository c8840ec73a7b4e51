"""Data sets and loaders for training binary networks.

One entry point per step::

    train_set, val_set = bnn.data.build_datasets("synthetic_shapes")      # or cifar10, cifar100,
    train_loader, val_loader = bnn.data.build_loaders(train_set, val_set,  # mnist, imagenet, imagefolder
                                                      batch_size=128, workers=2)
    for epoch in range(epochs):
        bnn.data.set_epoch(train_loader, epoch)
        ...

``synthetic_shapes`` (:class:`SyntheticShapes`) is embedded and needs no
download; the others go through torchvision, which is imported lazily (only
when such a data set is built). An ``imagefolder`` reads its crop size from its
images (:func:`folder_image_size`). A missing root raises
:class:`DatasetNotFoundError` (a ``FileNotFoundError``) with a one-line message.
"""
from .builders import (
    ALIASES,
    DATASETS,
    DEFAULT_DATASET,
    DatasetNotFoundError,
    EpochShuffleSampler,
    build_datasets,
    build_loaders,
    cifar_transforms,
    dataset_info,
    folder_image_size,
    folder_transforms,
    imagenet_transforms,
    list_datasets,
    mnist_transforms,
    set_epoch,
)
from .synthetic import SYNTHETIC_CLASSES, SyntheticShapes, generate_shapes

__all__ = [
    "ALIASES", "DATASETS", "DEFAULT_DATASET", "DatasetNotFoundError", "EpochShuffleSampler",
    "build_datasets", "build_loaders", "set_epoch", "dataset_info", "list_datasets",
    "cifar_transforms", "imagenet_transforms", "mnist_transforms", "folder_transforms", "folder_image_size",
    "SyntheticShapes", "SYNTHETIC_CLASSES", "generate_shapes",
]
