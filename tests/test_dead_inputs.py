"""Dead binarized layers (a ReLU in front of a sign): the training-time warning, diagnose(), the ReLU fix, NaN."""
import math
import warnings

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops


@pytest.fixture(autouse=True)
def fresh_warning_state(monkeypatch):
    monkeypatch.setattr(ops.base, "_dead_input_warned", [False])  # the warning is given once per process


def conv_net(before_sign: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), before_sign, nn.Conv2d(8, 8, 3, padding=1))


def train_forwards(model: nn.Module, steps: int) -> list:
    model.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            model(torch.randn(4, 3, 8, 8))
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_relu_fed_sign_conv_warns_once_naming_the_layer_and_the_fix():
    model = bnn.prepare_binary_model(conv_net(nn.ReLU()), bnn.presets.xnor_net(), ignore_layers_name=["_first_"])
    steps = ops.Binarizer.SATURATION_STEPS
    assert train_forwards(model, steps - 1) == []  # decided over the first steps, not on one batch
    caught = train_forwards(model, steps + 5)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("layer '2': 100.0% of the inputs of its BasicInputBinarizer")
    assert "ReLU" in message and "relu_friendly" in message and "BatchNorm" in message
    # the check is over: the hook is gone, so later steps take torch's hook-free path
    assert len(model[2].activation_pre_process._forward_hooks) == 0


def test_bn_fed_sign_conv_does_not_warn():
    model = bnn.prepare_binary_model(conv_net(nn.BatchNorm2d(8)), bnn.presets.xnor_net(), ignore_layers_name=["_first_"])
    assert train_forwards(model, 2 * ops.Binarizer.SATURATION_STEPS) == []
    assert len(model[2].activation_pre_process._forward_hooks) == 0


def test_a_user_binarizer_declaring_a_threshold_is_watched_and_eval_is_not():
    class MySign(ops.Binarizer):  # not a SignBinarizer subclass: declares its threshold only
        def forward(self, x):
            return torch.where(x < 0.5, -1.0, 1.0)

        def sign_threshold(self):
            return torch.tensor(0.5)

    model = bnn.prepare_binary_model(conv_net(nn.Sigmoid()), bnn.BConfig(activation_pre_process=MySign),
                                     ignore_layers_name=["_first_"])
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2 * ops.Binarizer.SATURATION_STEPS):
            model(torch.full((4, 3, 8, 8), -50.0))  # far below the threshold, but eval: no check
    assert caught == []
    model[0].bias.data.fill_(-50.0)  # sigmoid of a very negative value: all below 0.5 -> constant -1
    caught = train_forwards(model, ops.Binarizer.SATURATION_STEPS)
    assert len(caught) == 1 and "constant -1" in str(caught[0].message) and "MySign" in str(caught[0].message)


def test_weight_binarizers_and_output_processes_unhook_at_once():
    model = bnn.prepare_binary_model(conv_net(nn.ReLU()), bnn.presets.xnor_net(), ignore_layers_name=["_first_"])
    model.train()(torch.randn(2, 3, 8, 8))
    assert len(model[2].weight_pre_process._forward_hooks) == 0
    assert len(model[2].activation_post_process._forward_hooks) == 0
    assert len(model[2].activation_pre_process._forward_hooks) == 1


def test_diagnose_reports_the_fraction_of_plus_one_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1))
    model = bnn.prepare_binary_model(net, bnn.presets.bireal(), ignore_layers_name=["_first_"]).eval()
    batch = torch.randn(8, 3, 8, 8)
    lines = []
    rows = bnn.diagnose(model, batch, print_fn=lines.append)
    assert not model.training  # the model's own mode
    assert [row.layer for row in rows] == ["2", "4"]
    assert rows[0].high_fraction == 1.0 and rows[0].dead
    with torch.no_grad():
        bn_out = model[3](model[2](model[1](model[0](batch))))
    assert rows[1].high_fraction == pytest.approx((bn_out >= 0).float().mean().item())
    assert not rows[1].dead
    assert "DEAD" in lines[0].splitlines()[2] and "DEAD" not in lines[0].splitlines()[3]


def test_learned_threshold_starts_at_the_channel_mean_and_is_packed_as_a_sign():
    conv = nn.Conv2d(3, 4, 3)
    binarizer = ops.LearnedThresholdBinarizer(conv)
    x = torch.rand(5, 3, 6, 6) * torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    y = binarizer(x)
    mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(binarizer.sign_threshold(), mean)
    assert torch.equal(y, torch.where(x < mean.view(1, 3, 1, 1), -1.0, 1.0))
    before = binarizer.bias.detach().clone()
    binarizer(x + 10.0)  # initialised once only
    assert torch.equal(binarizer.bias.detach(), before)
    # its state (the learned threshold and the flag) round-trips
    fresh = ops.LearnedThresholdBinarizer(conv)
    fresh.load_state_dict(binarizer.state_dict())
    assert bool(fresh.threshold_initialized) and torch.equal(fresh.bias, binarizer.bias)
    # an uninitialised state loaded into a used binarizer: its next forward initialises it again
    binarizer.load_state_dict(ops.LearnedThresholdBinarizer(conv).state_dict())
    binarizer(x + 10.0)
    torch.testing.assert_close(binarizer.sign_threshold(), mean + 10.0)
    linear = ops.LearnedThresholdBinarizer(nn.Linear(3, 2))
    xl = torch.rand(7, 3)
    linear(xl)
    torch.testing.assert_close(linear.sign_threshold(), xl.mean(dim=0))


def blobs(n: int = 512, features: int = 16, classes: int = 4):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, features, generator=g) * 2.0
    y = torch.arange(n) % classes
    return centers[y] + torch.randn(n, features, generator=g), y


def relu_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def final_loss(bconfig: bnn.BConfig) -> float:
    x, y = blobs()
    model = bnn.prepare_binary_model(relu_mlp(), bconfig, ignore_layers_name=["_first_", "_last_"]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(150):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    return loss.item()


def test_relu_friendly_preset_makes_a_relu_network_learn_where_plain_sign_stays_at_chance():
    chance = math.log(4)
    plain = final_loss(bnn.presets.bireal())
    fixed = final_loss(bnn.presets.relu_friendly())
    assert plain > 0.99 * chance  # constant +1 into the binarized layer: nothing to learn from
    assert fixed < 0.25 * chance


@pytest.mark.parametrize("make", [ops.BasicInputBinarizer, ops.ApproxSignBinarizer, ops.SwishSignBinarizer,
                                  ops.StochasticInputBinarizer, lambda: ops.InputBiasBinarizer(nn.Linear(7, 2))])
def test_sign_binarizers_propagate_nan(make):
    x = torch.tensor([[float("nan"), -0.0, 0.0, -2.0, 3.0, float("inf"), float("-inf")]])
    binarizer = make()
    y = binarizer.eval()(x)
    assert torch.isnan(y[0, 0])
    assert torch.equal(y[0, 1:], torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0, -1.0]))  # sign(-0) = sign(0) = +1
    assert torch.isnan(binarizer.train()(x)[0, 0])  # the training forward too (stochastic included)
