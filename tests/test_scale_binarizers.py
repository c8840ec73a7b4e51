"""Output processes: learnable scales, bias, and XNOR-Net's input-magnitude factor K."""
import pytest
import torch
import torch.nn as nn

import bnn
from bnn.ops import BasicScaleBinarizer, BiasScaleBinarizer, XNORScaleBinarizer, XNORWeightBinarizer


def test_basic_scale_per_output_channel_not_in_place():
    module = BasicScaleBinarizer(nn.Conv2d(3, 2, 1)).double()
    assert module.scale.shape == (2,) and torch.equal(module.scale, torch.ones(2, dtype=torch.float64))
    with torch.no_grad():
        module.scale.copy_(torch.tensor([2.0, -0.5]))
    out = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 2, 1, 2).requires_grad_()
    x = torch.randn(1, 3, 1, 2, dtype=torch.float64)
    h = out * 1.0  # an intermediate autograd needs
    before, version = h.detach().clone(), h._version
    y = module(h, x)
    assert h._version == version and torch.equal(h.detach(), before)
    torch.testing.assert_close(y.view(2, 2), torch.tensor([[2.0, -4.0], [-1.5, -2.0]], dtype=torch.float64))
    g = torch.tensor([[1.0, 0.5], [2.0, -1.0]], dtype=torch.float64).view(1, 2, 1, 2)
    y.backward(g)
    # d scale_c = sum g * out over channel c; d out = g * scale_c
    torch.testing.assert_close(module.scale.grad, torch.tensor([1 * 1 + 0.5 * -2, 2 * 3 + -1 * 4], dtype=torch.float64))
    torch.testing.assert_close(out.grad.view(2, 2), torch.tensor([[2.0, 1.0], [-1.0, 0.5]], dtype=torch.float64))


def test_basic_scale_linear_shape():
    module = BasicScaleBinarizer(nn.Linear(3, 4))
    with torch.no_grad():
        module.scale.copy_(torch.arange(1.0, 5.0))
    out = torch.ones(2, 4)
    torch.testing.assert_close(module(out, torch.randn(2, 3)), torch.arange(1.0, 5.0).expand(2, 4))


def test_bias_scale():
    module = BiasScaleBinarizer(nn.Conv1d(3, 2, 1))
    with torch.no_grad():
        module.scale.copy_(torch.tensor([2.0, 3.0]))
        module.bias.copy_(torch.tensor([0.5, -1.0]))
    out = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    y = module(out, None)
    torch.testing.assert_close(y, torch.tensor([[[2.5, 4.5], [8.0, 11.0]]]))
    y.sum().backward()
    torch.testing.assert_close(module.bias.grad, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(module.scale.grad, torch.tensor([3.0, 7.0]))


def _xnor_k_loop(x, k, stride, padding):
    """K by hand: mean over channels of |x|, then the mean over each k x k window (zero padding counted)."""
    n, c, h, w = x.shape
    a = [[[sum(abs(x[b, ch, i, j].item()) for ch in range(c)) / c for j in range(w)] for i in range(h)] for b in range(n)]
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    out = torch.zeros(n, 1, oh, ow, dtype=x.dtype)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                total = 0.0
                for di in range(k):
                    for dj in range(k):
                        r, q = i * stride + di - padding, j * stride + dj - padding
                        if 0 <= r < h and 0 <= q < w:
                            total += a[b][r][q]
                out[b, 0, i, j] = total / (k * k)
    return out


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_xnor_scale_against_hand_loop(stride, padding):
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding).double()
    module = XNORScaleBinarizer(conv)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    k = _xnor_k_loop(x.detach(), 3, stride, padding)
    torch.testing.assert_close(module.magnitude(x).detach(), k)
    y = module(out, x)
    torch.testing.assert_close(y.detach(), out.detach() * k)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_xnor_scale_linear_and_in_a_layer():
    import bnn
    from bnn.ops import BasicInputBinarizer, XNORWeightBinarizer

    lin = nn.Linear(4, 2)
    module = XNORScaleBinarizer(lin)
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    torch.testing.assert_close(module(torch.ones(1, 2), x), torch.full((1, 2), 2.5))
    with pytest.raises(ValueError, match="input"):
        module(torch.ones(1, 2))
    # the full XNOR-Net layer runs forward and backward
    layer = bnn.prepare_binary_model(
        nn.Conv2d(3, 4, 3, padding=1),
        bnn.BConfig(BasicInputBinarizer, XNORScaleBinarizer, XNORWeightBinarizer),
    )
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


@pytest.mark.parametrize("cls", [BasicScaleBinarizer, BiasScaleBinarizer, XNORScaleBinarizer])
def test_enabled_switch_identity_and_state_dict_round_trip(cls):
    conv = nn.Conv2d(3, 2, 3, padding=1)
    module = cls(conv)
    for p in module.parameters():
        with torch.no_grad():
            p.add_(0.5)
    x = torch.randn(1, 3, 4, 4)
    out = conv(x)
    assert not torch.equal(module(out, x), out)
    module.enabled = False
    assert torch.equal(module(out, x), out)
    fresh = cls(conv)
    fresh.load_state_dict(module.state_dict())
    assert fresh.enabled is False
    for a, b in zip(fresh.parameters(), module.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("post_cls", [BasicScaleBinarizer, BiasScaleBinarizer])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_folds_affine_post_process_into_weight_exactly(post_cls, with_bias):
    """The layer applies an affine output process to its weight: same output and gradients as on the output."""
    torch.manual_seed(0)
    float_conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=with_bias).double()
    layer = bnn.prepare_binary_model(float_conv, bnn.BConfig(weight_pre_process=XNORWeightBinarizer,
                                                             activation_post_process=post_cls))
    with torch.no_grad():
        layer.activation_post_process.scale.copy_(torch.tensor([0.5, -2.0, 1.5, 3.0]))
        if post_cls is BiasScaleBinarizer:
            layer.activation_post_process.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.4]))
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = layer(x)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(layer.parameters()), g)
    # reference: the process applied to the output of the plain product, as post(op(x, wpre(W), b), x)
    ref_out = layer.activation_post_process(
        torch.nn.functional.conv2d(x, layer.weight_pre_process(layer.weight), layer.bias, padding=1), x)
    ref_grads = torch.autograd.grad(ref_out, list(layer.parameters()), g)
    torch.testing.assert_close(out, ref_out)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


# ---- Bi-Real Net's real-valued shortcut ------------------------------------------------------------------
def test_real_shortcut_same_shape_adds_the_input_and_passes_both_gradients():
    from bnn.ops import RealShortcut

    module = RealShortcut(nn.Conv2d(3, 3, 3, padding=1))
    out = torch.randn(2, 3, 4, 5, requires_grad=True)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    y = module(out, x)
    assert torch.equal(y, out + x)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(out.grad, g) and torch.equal(x.grad, g)


def test_real_shortcut_stride_two_pools_and_repeats_channels():
    from bnn.ops import RealShortcut

    module = RealShortcut(nn.Conv2d(2, 4, 3, stride=2, padding=1))
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).view(1, 2, 4, 4).requires_grad_()
    out = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    y = module(out, x)
    # output channel c reads input channel c mod 2; position (i, j) the mean of x's 2x2 window there
    assert y[0, 0, 0, 0].item() == (0 + 1 + 4 + 5) / 4
    assert y[0, 3, 1, 1].item() == (26 + 27 + 30 + 31) / 4
    assert torch.equal(y[:, :2], y[:, 2:])
    y.sum().backward()
    # each input value feeds one 2x2 mean (1/4) in each of its two copies
    assert torch.equal(x.grad, torch.full_like(x, 0.5))


def test_real_shortcut_odd_sizes_channel_averaging_and_linear():
    from bnn.ops import RealShortcut

    conv = nn.Conv2d(4, 2, 3, stride=2, padding=1)  # 7x9 -> 4x5: each output reads its window's mean
    x = torch.randn(2, 4, 7, 9)
    y = RealShortcut(conv)(torch.zeros(2, 2, 4, 5), x)
    pooled = nn.functional.adaptive_avg_pool2d(x, (4, 5))
    torch.testing.assert_close(y, (pooled[:, 0::2] + pooled[:, 1::2]) / 2)  # channels (0, 1) -> 0, (2, 3) -> 1
    linear = RealShortcut(nn.Linear(3, 6))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(linear(torch.zeros(1, 6), x), torch.tensor([[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]]))
    off = RealShortcut(nn.Linear(3, 6))
    off.enabled = False
    assert torch.equal(off(torch.ones(1, 6), x), torch.ones(1, 6))


def test_real_shortcut_bad_channels_name_the_layer_and_stay_on_through_set_binarization():
    from bnn.ops import RealShortcut

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 12, 3))
    bconfig = bnn.BConfig(activation_pre_process=bnn.ops.BasicInputBinarizer, activation_post_process=RealShortcut)
    with pytest.raises(ValueError, match=r"^layer '1': RealShortcut: Conv2d with 8 input and 12 output channels"):
        bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["0"])
    model = bnn.prepare_binary_model(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), bconfig)
    bnn.set_binarization(model, activations=False, weights=False)  # a float step keeps the architecture
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(model(x), model[0].to_float()(x) + x)
