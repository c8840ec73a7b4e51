"""bnn.data: the embedded synthetic set, builders, errors, loaders."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import bnn.data as D
from bnn.data import DatasetNotFoundError, SyntheticShapes, build_datasets, build_loaders, set_epoch


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors gain nothing from threads


def test_import_does_not_pull_torchvision():
    code = ("import sys, bnn, bnn.data, bnn.models; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torchvision']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_synthetic_deterministic_by_seed_and_splits_differ():
    a = SyntheticShapes("train", size=300, seed=3)
    b = SyntheticShapes("train", size=300, seed=3)
    c = SyntheticShapes("train", size=300, seed=4)
    v = SyntheticShapes("val", size=300, seed=3)
    assert a.data.dtype == torch.uint8 and a.data.shape == (300, 3, 32, 32)
    assert torch.equal(a.data, b.data) and a.targets == b.targets
    assert not torch.equal(a.data, c.data)
    # no validation image equals a training image
    flat_a, flat_v = a.data.flatten(1).float(), v.data.flatten(1).float()
    assert torch.cdist(flat_v, flat_a).min() > 0
    # balanced labels, all classes present, varied pixels
    assert sorted(set(a.targets)) == list(range(10)) and a.classes[0] == "disk"
    counts = torch.bincount(torch.tensor(a.targets), minlength=10)
    assert counts.tolist() == [30] * 10
    assert a.data.float().std() > 30
    x, y = a[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == a.targets[0]
    assert abs(x.mean().item()) < 2.0
    assert len(SyntheticShapes("val")) == 2000 and len(SyntheticShapes("train", size=5, num_classes=4).classes) == 4
    with pytest.raises(ValueError, match=r"^unknown split 'tran' for SyntheticShapes \(did you mean 'train'\?\)$"):
        SyntheticShapes("tran", size=5)


def test_build_datasets_synthetic_default_and_alias():
    train, val = build_datasets(train_size=64, val_size=32)
    assert isinstance(train, SyntheticShapes) and len(train) == 64 and len(val) == 32
    assert train.split == "train" and val.split == "val"
    t2, _ = build_datasets("synthetic", train_size=64, val_size=32)
    assert torch.equal(train.data, t2.data)
    assert D.dataset_info("synthetic") == D.dataset_info("synthetic_shapes")
    assert D.dataset_info("cifar100")["num_classes"] == 100 and D.dataset_info("mnist")["in_channels"] == 1
    with pytest.raises(ValueError, match=r"^unknown data set 'cifar' \(did you mean 'cifar10'\?\)$"):
        build_datasets("cifar")


@pytest.mark.parametrize("name,sub", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                      ("mnist", os.path.join("MNIST", "raw"))])
def test_missing_root_is_one_line_error(tmp_path, name, sub):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        build_datasets(name, root=str(root))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg and name in msg
    assert os.path.join(str(root), sub) in msg and "download=True" in msg
    assert not root.exists()  # nothing created when download is off


def test_failed_download_is_one_line_error(tmp_path, monkeypatch):
    """No network: torchvision's download raises urllib's URLError deep in a traceback;
    the user gets one line naming the data set, the URL and the reason."""
    import urllib.error
    import torchvision.datasets as D

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(D, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        build_datasets("cifar10", root=str(tmp_path / "c10"), download=True)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cifar10 data set not found")
    assert "cifar-10-python.tar.gz failed ([Errno -2] Name or service not known)" in msg


def test_missing_imagenet_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded") as info:
        build_datasets("imagenet", root=str(tmp_path), download=True)
    assert os.path.join(str(tmp_path), "train") in str(info.value)


def _image_folder(root, sizes):
    """root/{train,val}/{cat,dog}/i.png, one image per (width, height) in ``sizes`` per class."""
    from PIL import Image
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i, size in enumerate(sizes):
                Image.new("RGB", size, (i * 100 % 256, 20, 200)).save(d / f"{i}.png")
    return str(root)


def _names(dataset):
    return [type(t).__name__ for t in dataset.transform.transforms]


def test_imagefolder_crop_comes_from_the_images(tmp_path, caplog):
    # small images: the median shorter side (32 here, one odd 40x48 image) and CIFAR-style augmentation
    root = _image_folder(tmp_path / "small", [(32, 32), (32, 32), (48, 40)])
    with caplog.at_level("INFO", logger="bnn.data"):
        train, val = build_datasets("imagefolder", root=root)
    assert "imagefolder: 32-pixel crops, the median shorter side of the training images" in caplog.text
    assert D.dataset_info("imagefolder")["image_size"] is None
    assert train.image_size == val.image_size == 32 and train.classes == ["cat", "dog"] and len(train) == 6
    assert _names(train) == ["Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train.transform.transforms[2].padding == 4  # 32 // 8, as CIFAR
    assert _names(val) == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    for dataset in (train, val):
        assert {tuple(dataset[i][0].shape) for i in range(len(dataset))} == {(3, 32, 32)}
    # large photos: ImageNet crops, capped at 224
    train, val = build_datasets("imagefolder", root=_image_folder(tmp_path / "large", [(300, 260)]))
    assert train.image_size == 224 and _names(train)[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert train[0][0].shape == (3, 224, 224) and val.transform.transforms[0].size == 256
    # medium images: their own size with the ImageNet pipeline (96 / 0.875 = 110 before the center crop)
    train, val = build_datasets("imagefolder", root=_image_folder(tmp_path / "medium", [(96, 120)]))
    assert train.image_size == 96 and _names(train)[0] == "RandomResizedCrop"
    assert val.transform.transforms[0].size == 110 and val[0][0].shape == (3, 96, 96)
    assert D.folder_image_size(str(tmp_path / "large" / "train"), cap=100) == 100
    # no image files: a one-line error naming the folder
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"imagefolder: no image files .* under '.*empty/train'$"):
        build_datasets("imagefolder", root=str(tmp_path / "empty"))


def test_imagefolder_transforms(tmp_path):
    train, val = build_datasets("folder", root=_image_folder(tmp_path, [(50, 40), (50, 40)]), image_size=32)
    assert train.classes == ["cat", "dog"] and len(train) == 4 and len(val) == 4
    x, y = train[0]
    assert x.shape == (3, 32, 32) and y == 0 and train.image_size == 32
    assert _names(train)[2:] == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert val[0][0].shape == (3, 32, 32)
    train, val = build_datasets("folder", root=str(tmp_path), image_size=80)  # explicit, above the small-image size
    assert _names(train)[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"] and _names(train)[-1] == "Normalize"
    assert _names(val)[:2] == ["Resize", "CenterCrop"] and val.transform.transforms[0].size == 91  # 80 / 0.875
    assert val[0][0].shape == (3, 80, 80)
    # the ImageNet defaults: Resize(256) / CenterCrop(224)
    tv = D.imagenet_transforms(train=False).transforms
    assert tv[0].size == 256 and tv[1].size == (224, 224)
    ct = [type(t).__name__ for t in D.cifar_transforms((0.5,) * 3, (0.2,) * 3, train=True).transforms]
    assert ct == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]


def test_loaders_epoch_order_and_distributed_split():
    train, val = build_datasets(train_size=40, val_size=10)
    tl, vl = build_loaders(train, val, batch_size=8, workers=0, seed=1)

    def order(loader, epoch):
        set_epoch(loader, epoch)
        return torch.cat([y for _, y in loader]).tolist(), list(iter(loader.sampler))

    (y0, i0), (_, i1), (y0b, i0b) = order(tl, 0), order(tl, 1), order(tl, 0)
    assert i0 == i0b and y0 == y0b and i0 != i1 and sorted(i0) == list(range(40))
    assert len(vl) == 2 and list(iter(vl.sampler)) == list(range(10))  # val: sequential
    r0, _ = build_loaders(train, val, 8, distributed=True, num_replicas=2, rank=0, seed=1)
    r1, _ = build_loaders(train, val, 8, distributed=True, num_replicas=2, rank=1, seed=1)
    s0, s1 = set(iter(r0.sampler)), set(iter(r1.sampler))
    assert len(s0) == len(s1) == 20 and not s0 & s1 and s0 | s1 == set(range(40))
    custom = torch.utils.data.SequentialSampler(train)
    tl2, _ = build_loaders(train, val, 8, train_sampler=custom)
    assert tl2.sampler is custom


def test_tiny_cnn_learns_synthetic_above_chance():
    torch.manual_seed(0)
    train, val = build_datasets(train_size=1600, val_size=400, seed=0)
    tl, vl = build_loaders(train, val, batch_size=16, seed=0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), 5e-3)

    def accuracy():
        net.eval()
        with torch.no_grad():
            return sum((net(x).argmax(1) == y).sum().item() for x, y in vl) / len(val)

    before = accuracy()
    for epoch in range(3):
        set_epoch(tl, epoch)
        net.train()
        for x, y in tl:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    acc = accuracy()
    assert before < 0.2 and acc > 0.25, (before, acc)  # chance is 0.10; measured 0.35
