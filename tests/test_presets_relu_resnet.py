"""The documented fix for ordinary ReLU ResNets: relu_friendly with bnn.presets.FLOAT_LAYERS learns, plain sign does not."""
import math
import warnings

import pytest
import torch
import torch.nn as nn

import bnn

resnet = pytest.importorskip("torchvision.models.resnet")


def tiny_torchvision_resnet(width: int = 8) -> nn.Module:
    """torchvision's BasicBlock (conv-BN-ReLU-conv-BN, + shortcut, ReLU) in a two-stage ResNet, with its names."""
    def downsample(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         resnet.BasicBlock(width, width),
                         resnet.BasicBlock(width, 2 * width, 2, downsample(width, 2 * width)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 2))


def dot_pairs(seed: int, n: int = 256, size: int = 12, gap: int = 5):
    """Two bright pixels ``gap`` apart, side by side (class 0) or one above the other (class 1).

    Every 3x3 patch looks the same in both classes: only layers that see both
    dots (the binarized 3x3 convs) can tell them apart; the float stem, 1x1
    shortcuts and classifier alone cannot.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, size, size)
    corner = torch.randint(1, size - 1 - gap, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        x[i, 0, r, c] = 1.0
        x[i, 0, r + gap * int(y[i]), c + gap * (1 - int(y[i]))] = 1.0
    return (x - x.mean()) / x.std(), y


def held_out_losses(bconfig: bnn.BConfig, steps: int = 60, every: int = 10, seed: int = 0) -> list:
    """Held-out cross-entropy every ``every`` training steps (Adam, lr 1e-2, full batch)."""
    x, y = dot_pairs(seed=0)
    x_val, y_val = dot_pairs(seed=1)
    torch.manual_seed(seed)
    model = bnn.prepare_binary_model(tiny_torchvision_resnet(), bconfig, ignore_layers_name=bnn.presets.FLOAT_LAYERS)
    binarized = {name for name, m in model.named_modules() if getattr(m, "activation_pre_process", None) is not None}
    assert binarized == {"3.conv1", "3.conv2", "4.conv1", "4.conv2"}  # stem, classifier, downsample stay float
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for step in range(1, steps + 1):
            model.train()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % every == 0:
                with torch.no_grad():
                    losses.append(nn.functional.cross_entropy(model.eval()(x_val), y_val).item())
    return losses


@pytest.mark.parametrize("shortcut", [True, False])
def test_relu_friendly_resnet_learns_where_plain_sign_stays_at_chance(shortcut):
    chance = math.log(2)
    # the best held-out loss of the run (checked every 10 steps): a binary network's loss jumps from step to
    # step, and where it lands after a fixed count depends on the float summation order (thread count)
    fixed = min(held_out_losses(bnn.presets.relu_friendly(shortcut=shortcut), steps=100))
    # plain sign: every binarized conv is fed by a ReLU, sees only +1 and outputs a constant. (XNOR-Net's
    # K = mean|x| output scale is left out: it is a float box filter that would carry the dots past the sign.)
    plain = min(held_out_losses(bnn.presets.xnor_net(activation_scale=False), steps=60))
    assert fixed < 0.1 * chance
    assert plain > 0.8 * chance
