"""Activation binarizers: forward values and surrogate gradients against hand-computed numbers."""
import math

import pytest
import torch
import torch.nn as nn

from bnn.ops import (
    ApproxSignBinarizer,
    BasicInputBinarizer,
    Binarizer,
    InputBiasBinarizer,
    KBitActivationQuantizer,
    ScaleThresholdBinarizer,
    StochasticInputBinarizer,
    SwishSignBinarizer,
)

XS = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
SIGNS = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]  # sign(0) = +1
G = [0.3, -0.7, 1.1, 2.0, -1.3, 0.9, 0.4]  # an upstream gradient that is not all ones


def forward_backward(module, values=XS, grad=G):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y.backward(torch.tensor(grad, dtype=torch.float64))
    return y.detach(), x.grad


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_basic_input_binarizer_sign_and_clipped_ste():
    y, gx = forward_backward(BasicInputBinarizer())
    assert torch.equal(y, t(SIGNS))
    # g * 1[|x| <= 1]
    torch.testing.assert_close(gx, t([0.0, -0.7, 1.1, 2.0, -1.3, 0.9, 0.0]))


def test_approx_sign_binarizer_bireal_surrogate():
    y, gx = forward_backward(ApproxSignBinarizer())
    assert torch.equal(y, t(SIGNS))
    # (2 - 2|x|) * 1[|x| <= 1]: 0, 0, 1, 2, 1, 0, 0
    torch.testing.assert_close(gx, t([0.0, 0.0, 1.1, 4.0, -1.3, 0.0, 0.0]))


@pytest.mark.parametrize("beta", [5.0, 2.0])
def test_swish_sign_binarizer_surrogate(beta):
    module = SwishSignBinarizer() if beta == 5.0 else SwishSignBinarizer(beta=beta)
    assert module.beta == beta
    y, gx = forward_backward(module)
    assert torch.equal(y, t(SIGNS))
    expected = []
    for x, g in zip(XS, G):
        bx = beta * x
        expected.append(g * beta * (2 - bx * math.tanh(bx / 2)) / (1 + math.cosh(bx)))
    torch.testing.assert_close(gx, t(expected))
    # at 0 the surrogate peaks at 2 * beta / 2 = beta
    assert gx[3].item() == pytest.approx(2.0 * beta)


def test_input_bias_binarizer_conv2d_values_and_gradients():
    layer = nn.Conv2d(2, 3, 1)
    module = InputBiasBinarizer(layer).double()
    assert module.bias.shape == (1, 2, 1, 1) and torch.count_nonzero(module.bias) == 0
    with torch.no_grad():
        module.bias.copy_(t([0.5, -0.25]).view(1, 2, 1, 1))
    x = t([XS, XS]).view(1, 2, 1, 7).requires_grad_()
    g = t([G, G]).view(1, 2, 1, 7)
    y = module(x)
    y.backward(g)
    # channel 0: z = x + 0.5 = [-1, -.5, 0, .5, 1, 1.5, 2]; channel 1: z = x - .25 = [-1.75, -1.25, -.75, -.25, .25, .75, 1.25]
    assert torch.equal(y.view(2, 7), t([[-1, -1, 1, 1, 1, 1, 1], [-1, -1, -1, -1, 1, 1, 1]]))
    surrogate = t([[0, 1, 2, 1, 0, 0, 0], [0, 0, 0.5, 1.5, 1.5, 0.5, 0]])
    expected_gx = surrogate * t([G, G])
    torch.testing.assert_close(x.grad.view(2, 7), expected_gx)
    torch.testing.assert_close(module.bias.grad.view(2), expected_gx.sum(dim=1))


@pytest.mark.parametrize(
    "layer, x_shape, bias_shape",
    [
        (nn.Conv1d(3, 2, 3), (2, 3, 5), (1, 3, 1)),
        (nn.Conv2d(3, 2, 3), (2, 3, 5, 5), (1, 3, 1, 1)),
        (nn.Linear(3, 2), (2, 3), (3,)),
    ],
)
def test_input_bias_binarizer_all_layer_kinds(layer, x_shape, bias_shape):
    module = InputBiasBinarizer(layer)
    assert module.bias.shape == bias_shape
    with torch.no_grad():
        module.bias.copy_(torch.tensor([0.3, -0.3, 0.1]).view(bias_shape))
    x = (torch.rand(x_shape) - 0.5).requires_grad_()
    y = module(x)
    y.sum().backward()
    assert torch.equal(y, torch.where(x + module.bias >= 0, 1.0, -1.0))
    assert module.bias.grad.shape == bias_shape
    z = (x + module.bias).detach()
    channel_dim = 1 if len(bias_shape) > 1 else -1
    surrogate = (2 - 2 * z.abs()).clamp_min(0)
    expected = surrogate.movedim(channel_dim, 0).reshape(3, -1).sum(dim=1)
    torch.testing.assert_close(module.bias.grad.view(-1), expected.view(-1))


def test_stochastic_binarizer_never_mutates_input_and_has_gradient():
    module = StochasticInputBinarizer().train()
    x = t(XS).repeat(4000).requires_grad_()
    before = x.detach().clone()
    version = x._version
    y = module(x)
    assert x._version == version and torch.equal(x.detach(), before)
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    y.backward(torch.ones_like(y))
    # g * 1[|x| <= 1]: non-zero inside [-1, 1]
    torch.testing.assert_close(x.grad.view(4000, 7)[0], t([0, 1, 1, 1, 1, 1, 0]))
    # P(+1) = clip((x + 1) / 2, 0, 1): E[y] = clip(x, -1, 1)
    mean = y.detach().view(4000, 7).mean(dim=0)
    assert mean[0] == -1.0 and mean[1] == -1.0 and mean[5] == 1.0 and mean[6] == 1.0
    torch.testing.assert_close(mean[2:5], t([-0.5, 0.0, 0.5]), atol=0.06, rtol=0)
    # eval: deterministic sign
    module.eval()
    y_eval, _ = forward_backward(module)
    assert torch.equal(y_eval, t(SIGNS))


# ---- NNCF ScaleThresholdBinarizer ---------------------------------------------------------------------------------

def _scale_threshold(scale_param, threshold_params):
    module = ScaleThresholdBinarizer(nn.Conv2d(2, 1, 1)).double()
    with torch.no_grad():
        module.scale_param.fill_(scale_param)
        module.threshold_param.copy_(t(threshold_params).view(1, 2, 1, 1))
    module.scale_initialized.fill_(True)
    return module


def test_scale_threshold_forward_and_three_gradients():
    s = 2.0
    module = _scale_threshold(math.log(s), [0.0, math.log(3.0)])  # t = sigmoid: 0.5 and 0.75
    ts = [0.5, 0.75]
    xs = [[-1.5, -0.5, 0.0, 0.5, 1.0, 1.2, 2.0, 2.5], [-1.0, 0.0, 0.7, 1.5, 1.6, 1.9, 2.0, 3.0]]
    gs = [[0.3, -0.7, 1.1, 2.0, -1.3, 0.9, 0.4, 0.6], [1.0, -0.5, 0.25, 0.8, -0.2, 1.5, -1.0, 0.7]]
    x = t(xs).view(1, 2, 1, 8).requires_grad_()
    y = module(x)
    y.backward(t(gs).view(1, 2, 1, 8))

    out, grad_x, grad_s, grad_t = [], [], 0.0, [0.0, 0.0]
    for c in range(2):
        row_out, row_gx = [], []
        for xi, gi in zip(xs[c], gs[c]):
            o = s if xi - s * ts[c] > 0 else 0.0  # s * H(x - s t)
            row_out.append(o)
            row_gx.append(gi if 0.0 <= xi <= s else 0.0)  # g * 1[0 <= x <= s]
            grad_s += gi * ((o - xi) / s if xi <= s else 1.0)  # g * (1[x <= s] (out - x)/s + 1[x > s])
            grad_t[c] += -gi if 0.0 < xi < s else 0.0  # -g * 1[0 < x < s]
        out.append(row_out)
        grad_x.append(row_gx)
    assert torch.equal(y.detach().view(2, 8), t(out))
    assert out == [[0, 0, 0, 0, 0, s, s, s], [0, 0, 0, 0, s, s, s, s]]
    torch.testing.assert_close(x.grad.view(2, 8), t(grad_x))
    # chained through s = exp(scale_param) and t = sigmoid(threshold_param)
    torch.testing.assert_close(module.scale_param.grad, torch.tensor(grad_s * s, dtype=torch.float64))
    expected_t = [grad_t[c] * ts[c] * (1 - ts[c]) for c in range(2)]
    torch.testing.assert_close(module.threshold_param.grad.view(2), t(expected_t))


def test_scale_threshold_parameterization_and_init_values():
    module = ScaleThresholdBinarizer(nn.Conv2d(5, 2, 3))
    assert module.scale_param.shape == () and module.threshold_param.shape == (1, 5, 1, 1)
    assert torch.count_nonzero(module.threshold_param) == 0  # t = sigmoid(0) = 0.5
    assert not bool(module.scale_initialized)
    assert "scale_initialized" in module.state_dict()


def test_scale_threshold_percentile_init_on_first_training_forward_only():
    module = ScaleThresholdBinarizer(nn.Conv2d(4, 2, 1))
    x = torch.randperm(10000).float().add(1.0).view(1, 4, 50, 50)  # values 1..10000
    # eval forward: no init
    module.eval()
    module(x)
    assert not bool(module.scale_initialized) and module.scale_param.item() == 0.0
    # disabled training forward: no init
    module.train()
    module.enabled = False
    assert module(x) is x
    assert not bool(module.scale_initialized) and module.scale_param.item() == 0.0
    # first enabled training forward: log of the 99.9th percentile
    module.enabled = True
    module(x)
    assert bool(module.scale_initialized)
    expected = math.log(torch.quantile(x.flatten().double(), 0.999).item())  # ~ log(9990)
    assert module.scale_param.item() == pytest.approx(expected, abs=2e-4)
    # later forwards leave it alone
    module(x * 7.0)
    assert module.scale_param.item() == pytest.approx(expected, abs=2e-4)
    # the flag travels with the state dict
    fresh = ScaleThresholdBinarizer(nn.Conv2d(4, 2, 1))
    fresh.load_state_dict(module.state_dict())
    assert bool(fresh.scale_initialized) and fresh.scale_param.item() == module.scale_param.item()


# ---- k-bit activation quantizer -----------------------------------------------------------------------------------

def test_kbit_quantizer_int8_grid_and_ste():
    module = KBitActivationQuantizer()
    assert module.bits == 8 and module.ratio == 1.0
    y, gx = forward_backward(module.double())
    step = 1.5 / 127  # running max |x| = 1.5 after the first training forward
    assert module.running_absmax.item() == pytest.approx(1.5)
    expected = [max(-128, min(127, round(v / step))) * step for v in XS]
    torch.testing.assert_close(y, t(expected))
    codes = y / step
    torch.testing.assert_close(codes, codes.round())
    assert codes.min() >= -128 and codes.max() <= 127
    torch.testing.assert_close(gx, t(G))  # straight-through inside the range
    # eval: the range is frozen; outside it, clipped with zero gradient
    module.eval()
    y2, gx2 = forward_backward(module, values=[3.0, -3.0, 0.3], grad=[1.0, 1.0, 1.0])
    torch.testing.assert_close(y2, t([127 * step, -128 * step, round(0.3 / step) * step]))
    torch.testing.assert_close(gx2, t([0.0, 0.0, 1.0]))
    assert module.running_absmax.item() == pytest.approx(1.5)


def test_kbit_quantizer_two_bits_running_max_and_ratio():
    module = KBitActivationQuantizer(bits=2, momentum=0.5).double()
    y, _ = forward_backward(module, values=[-1.0, -0.4, 0.2, 0.6, 1.0], grad=[1.0] * 5)
    # qmax = 1, step = 1.0: grid {-2, -1, 0, 1}
    torch.testing.assert_close(y, t([-1.0, 0.0, 0.0, 1.0, 1.0]))
    forward_backward(module, values=[3.0, 0.0], grad=[1.0, 1.0])  # running max -> 1 + 0.5 * (3 - 1) = 2
    assert module.running_absmax.item() == pytest.approx(2.0)
    module.eval()
    module.ratio = 0.25
    x = t([0.9])
    q = 0.0 if abs(0.9 / 2.0) < 0.5 else 2.0  # round(0.45) = 0
    torch.testing.assert_close(module(x), t([0.75 * 0.9 + 0.25 * q]))
    module.ratio = 0.0
    assert module(x) is x
    with pytest.raises(ValueError, match="bits"):
        KBitActivationQuantizer(bits=1)


def test_kbit_ratio_saved_in_state_dict():
    module = KBitActivationQuantizer(ratio=0.3)
    fresh = KBitActivationQuantizer()
    fresh.load_state_dict(module.state_dict())
    assert fresh.ratio == 0.3


# ---- enabled switch ---------------------------------------------------------------------------------------------

ACTIVATIONS = [
    lambda: BasicInputBinarizer(),
    lambda: ApproxSignBinarizer(),
    lambda: SwishSignBinarizer(),
    lambda: InputBiasBinarizer(nn.Conv2d(3, 2, 1)),
    lambda: StochasticInputBinarizer(),
    lambda: ScaleThresholdBinarizer(nn.Conv2d(3, 2, 1)),
    lambda: KBitActivationQuantizer(),
]


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_enabled_switch_identity_and_state_dict_round_trip(make):
    module = make()
    assert isinstance(module, Binarizer) and module.enabled
    x = torch.randn(2, 3, 4, 4)
    assert not torch.equal(module(x), x)
    module.enabled = False
    before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    assert torch.equal(module(x), x)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items() if k in before)
    state = module.state_dict()
    assert "_extra_state" in state
    fresh = make()
    fresh.load_state_dict(state)
    assert fresh.enabled is False
    module.enabled = True
    fresh.load_state_dict(module.state_dict())
    assert fresh.enabled is True
