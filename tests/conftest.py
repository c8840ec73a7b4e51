"""Shared fixtures: deterministic seeds and a tiny model with named layers."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny tensors gain nothing from threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_tiny_net() -> nn.Module:
    """stem (Conv2d 3->4) / body.{a,b,c} (Conv2d 4->4) / pool / head (Linear 4->3), in that definition order."""
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 4, 3, padding=1),
            body=nn.Sequential(
                OrderedDict(
                    a=nn.Conv2d(4, 4, 3, padding=1),
                    bn=nn.BatchNorm2d(4),
                    b=nn.Conv2d(4, 4, 1),
                    c=nn.Conv2d(4, 4, 1, bias=False),
                )
            ),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(4, 3),
        )
    )


@pytest.fixture
def tiny_net() -> nn.Module:
    return make_tiny_net()
