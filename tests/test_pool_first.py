"""Max pool first (bnn.deploy.reorder): a max pool after a nondecreasing activation runs first, with the same
outputs; every case where that would not be exact keeps its order."""
import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import pack_binary_model
from bnn.deploy.reorder import PoolThenActivation, pool_before_activation

BC = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)


def _stem_model(act: nn.Module, pool: nn.Module, dims: int = 2) -> nn.Module:
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
    torch.manual_seed(0)
    net = nn.Sequential(conv(3, 16, 3, padding=1), bn(16), act, pool, conv(16, 8, 3, padding=1))
    net[1].running_mean.uniform_(-0.5, 0.5)  # a BatchNorm that shifts values below zero: windows of all-negative
    fake = bnn.prepare_binary_model(net, BC, ignore_layers_name=["0"])
    return fake.eval()


def _input(dims: int) -> torch.Tensor:
    # values on a coarse grid: many ties inside the pooling windows
    shape = (2, 3, 11, 13) if dims == 2 else (2, 3, 29)
    return (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 4).round() / 4


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardtanh(-0.5, 0.7),
                                 nn.LeakyReLU(0.1)], ids=lambda m: repr(m))
@pytest.mark.parametrize("pool,dims", [(nn.MaxPool2d(3, 2, 1), 2), (nn.MaxPool2d(2, ceil_mode=True), 2),
                                       (nn.MaxPool2d(3, 1, 1, dilation=2), 2), (nn.MaxPool1d(3, 2, 1), 1)])
def test_max_pool_runs_before_a_nondecreasing_activation(act, pool, dims):
    fake = _stem_model(act, pool, dims)
    first, kept = pack_binary_model(fake), pack_binary_model(fake, pool_first=False)
    assert isinstance(first[2], nn.Identity) and isinstance(first[3], PoolThenActivation)
    assert first[3].pool is not None and type(first[3].act) is type(act)
    assert type(kept[2]) is type(act) and type(kept[3]) is type(pool)
    x = _input(dims)
    with torch.no_grad():
        y = first(x)
        assert torch.equal(y, kept(x))
        assert torch.allclose(y, fake(x), atol=1e-4)


class _Reused(nn.Module):
    """The activation's output has a second user."""

    def __init__(self):
        super().__init__()
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)

    def forward(self, x):
        a = self.act(x)
        return self.pool(a) + a.mean()


class _InplaceSource(nn.Module):
    """An in-place ReLU whose input is returned too (it must see the activated values)."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.pool = nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.pool(self.act(y)), y


class _Indices(nn.Module):
    def __init__(self):
        super().__init__()
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        return self.pool(self.act(x))


class _Shared(nn.Module):
    """One ReLU module called twice."""

    def __init__(self):
        super().__init__()
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.act(x)) + self.act(x)[..., ::2, ::2]


def _hooked():
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    net[1].register_forward_hook(lambda m, i, o: None)
    return net


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.GELU(), nn.MaxPool2d(2)),  # not monotone
    lambda: nn.Sequential(nn.LeakyReLU(-0.5), nn.MaxPool2d(2)),  # decreasing for x < 0
    lambda: nn.Sequential(nn.ReLU(), nn.AvgPool2d(2)),  # an average does not commute with ReLU
    _Reused, _InplaceSource, _Indices, _Shared, _hooked,
], ids=["gelu", "negative-slope", "avg-pool", "output-reused", "inplace-source-reused", "indices", "shared",
        "hooks"])
def test_pool_keeps_its_place_where_moving_it_is_not_exact(make):
    model = make().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
    types = [type(m) for m in model.modules()]
    assert pool_before_activation(model) == []
    assert [type(m) for m in model.modules()] == types
    with torch.no_grad():
        after = model(x)
    as_tuple = (lambda out: out if isinstance(out, tuple) else (out,))
    for b, a in zip(as_tuple(before), as_tuple(after)):
        assert torch.equal(b, a)


def test_resnet18_stem_pools_first_with_identical_outputs():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    fake = bnn.prepare_binary_model(model, BC, custom_config_layers_name={"conv1": bnn.BConfig()},
                                    ignore_layers_name=["fc"]).eval()
    first, kept = pack_binary_model(fake), pack_binary_model(fake, pool_first=False)
    assert isinstance(first.relu, nn.Identity) and isinstance(first.maxpool, PoolThenActivation)
    assert sum(isinstance(m, PoolThenActivation) for m in first.modules()) == 1  # the blocks have no max pool
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first(x), kept(x))
