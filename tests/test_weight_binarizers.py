"""Weight binarizers: forward values (per-channel / per-tensor scales) and straight-through gradients."""
import pytest
import torch

from bnn.ops import DoReFaWeightBinarizer, GradualWeightBinarizer, MagnitudeAwareWeightBinarizer, XNORWeightBinarizer

W = [[1.0, -2.0, 3.0], [-0.5, 0.5, 0.0]]
G = [[0.3, -0.7, 1.1], [2.0, -1.3, 0.9]]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def run(module, w=W, g=G):
    weight = t(w).requires_grad_()
    y = module(weight)
    y.backward(t(g))
    return y.detach(), weight.grad


def tsign(v):  # d|w|/dw as torch defines it (0 at 0)
    return (v > 0) - (v < 0)


def test_xnor_per_output_channel_values_and_gradient():
    y, gw = run(XNORWeightBinarizer())
    # alpha = mean |W| per row: 2 and 1/3; sign(0) = +1
    torch.testing.assert_close(y, t([[2.0, -2.0, 2.0], [-1 / 3, 1 / 3, 1 / 3]]))
    # d/dW_ci [sign(W_c.) * alpha_c] = g_ci * alpha_c (STE) + tsign(W_ci) / n * sum_j g_cj sign(W_cj)
    expected = []
    for w_row, g_row in zip(W, G):
        alpha = sum(abs(v) for v in w_row) / 3
        inner = sum(g * (1.0 if v >= 0 else -1.0) for v, g in zip(w_row, g_row))
        expected.append([g * alpha + tsign(v) * inner / 3 for v, g in zip(w_row, g_row)])
    torch.testing.assert_close(gw, t(expected))


def test_xnor_without_alpha_is_plain_sign_with_ste():
    y, gw = run(XNORWeightBinarizer(compute_alpha=False))
    assert torch.equal(y, t([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]]))
    torch.testing.assert_close(gw, t(G))


def test_xnor_centering():
    w = [[1.0, 2.0, 6.0], [0.0, -1.0, 4.0]]
    y, gw = run(XNORWeightBinarizer(center_weights=True), w=w)
    # row 0: mean 3 -> [-2, -1, 3], alpha 2; row 1: mean 1 -> [-1, -2, 3], alpha 2
    torch.testing.assert_close(y, t([[-2.0, -2.0, 2.0], [-2.0, -2.0, 2.0]]))
    # reference: the same math written with an explicit straight-through sign
    ref_w = t(w).requires_grad_()
    centered = ref_w - ref_w.mean(dim=1, keepdim=True)
    sign_ste = centered + (torch.where(centered >= 0, 1.0, -1.0).double() - centered).detach()
    (sign_ste * centered.abs().mean(dim=1, keepdim=True)).backward(t(G))
    torch.testing.assert_close(gw, ref_w.grad)
    # centering is differentiated: the STE part of every row's gradient sums to the scale term only
    assert not torch.allclose(gw, run(XNORWeightBinarizer(), w=w)[1])


def test_xnor_conv_weight_scale_is_per_output_channel():
    w = torch.randn(4, 3, 3, 3)
    y = XNORWeightBinarizer()(w)
    alpha = w.abs().mean(dim=(1, 2, 3))
    for c in range(4):
        torch.testing.assert_close(y[c].abs(), alpha[c].expand(3, 3, 3))
    assert torch.equal(torch.sign(y), torch.where(w >= 0, 1.0, -1.0))


def test_magnitude_aware_detaches_the_scale():
    y, gw = run(MagnitudeAwareWeightBinarizer())
    y_xnor, gw_xnor = run(XNORWeightBinarizer())
    assert torch.equal(y, y_xnor)
    # only the STE part: g * alpha_c
    torch.testing.assert_close(gw, t([[0.3 * 2, -0.7 * 2, 1.1 * 2], [2.0 / 3, -1.3 / 3, 0.9 / 3]]))
    assert not torch.allclose(gw, gw_xnor)


def test_dorefa_one_scale_for_the_whole_tensor():
    y, gw = run(DoReFaWeightBinarizer())
    a = 7.0 / 6.0  # mean |W| over all six entries
    torch.testing.assert_close(y, t([[a, -a, a], [-a, a, a]]))
    inner = sum(g * (1.0 if v >= 0 else -1.0) for rw, rg in zip(W, G) for v, g in zip(rw, rg))
    expected = [[g * a + tsign(v) * inner / 6 for v, g in zip(rw, rg)] for rw, rg in zip(W, G)]
    torch.testing.assert_close(gw, t(expected))
    conv_w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(DoReFaWeightBinarizer()(conv_w).abs(), conv_w.abs().mean().expand_as(conv_w))


def test_weight_bits_declared():
    assert XNORWeightBinarizer.weight_bits == 1 and DoReFaWeightBinarizer.weight_bits == 1
    assert MagnitudeAwareWeightBinarizer.weight_bits == 1 and GradualWeightBinarizer.weight_bits == 1


# ---- GradualWeightBinarizer -------------------------------------------------------------------------------------

BIN = t([[2.0, -2.0, 2.0], [-1 / 3, 1 / 3, 1 / 3]])  # sign(W) * mean_c |W|


@pytest.mark.parametrize("bin_ratio, p", [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.0, 0.5)])
def test_gradual_identity_when_ratio_or_p_is_zero(bin_ratio, p):
    module = GradualWeightBinarizer(bin_ratio=bin_ratio, p=p)
    y, gw = run(module)
    assert torch.equal(y, t(W))
    torch.testing.assert_close(gw, t(G))


def test_gradual_fully_binary():
    y, gw = run(GradualWeightBinarizer(bin_ratio=1.0, p=1.0))
    torch.testing.assert_close(y, BIN)
    # straight-through with the scale detached: g * alpha_c
    torch.testing.assert_close(gw, t([[0.3 * 2, -0.7 * 2, 1.1 * 2], [2.0 / 3, -1.3 / 3, 0.9 / 3]]))
    y, gw = run(GradualWeightBinarizer(bin_ratio=1.0, p=1.0, compute_alpha=False))
    assert torch.equal(y, t([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]]))
    torch.testing.assert_close(gw, t(G))


def test_gradual_ratio_in_between():
    y, gw = run(GradualWeightBinarizer(bin_ratio=0.25, p=1.0))
    torch.testing.assert_close(y, 0.75 * t(W) + 0.25 * BIN)
    alpha = t([[2.0], [1 / 3]])
    torch.testing.assert_close(gw, t(G) * (0.75 + 0.25 * alpha))


def test_gradual_p_between_mixes_entries_in_training_and_expects_in_eval():
    module = GradualWeightBinarizer(bin_ratio=1.0, p=0.5, compute_alpha=False).train()
    w = torch.rand(200, 50) * 0.5 + 0.25  # |w| in (0.25, 0.75): never equal to its sign
    y = module(w)
    is_binary = y == 1.0
    assert torch.equal(y[~is_binary], w[~is_binary])  # each entry is either the float or the binary value
    assert 0.45 < is_binary.float().mean().item() < 0.55
    module.eval()
    torch.testing.assert_close(module(w), 0.5 * w + 0.5)


def test_gradual_attributes_settable_while_training_and_saved():
    module = GradualWeightBinarizer()
    w = t(W).requires_grad_()
    assert torch.equal(module(w), w)
    module.bin_ratio, module.p = 1.0, 1.0  # a schedule ramps them
    torch.testing.assert_close(module(w).detach(), BIN)
    module.bin_ratio = 0.5
    torch.testing.assert_close(module(w).detach(), 0.5 * t(W) + 0.5 * BIN)
    fresh = GradualWeightBinarizer()
    fresh.load_state_dict(module.state_dict())
    assert (fresh.bin_ratio, fresh.p) == (0.5, 1.0)


@pytest.mark.parametrize(
    "make",
    [
        XNORWeightBinarizer,
        lambda: XNORWeightBinarizer(center_weights=True),
        DoReFaWeightBinarizer,
        MagnitudeAwareWeightBinarizer,
        lambda: GradualWeightBinarizer(bin_ratio=1.0, p=1.0),
    ],
)
def test_enabled_switch_identity_and_state_dict_round_trip(make):
    module = make()
    w = torch.randn(4, 3, 3, 3)
    assert not torch.equal(module(w), w)
    module.enabled = False
    assert torch.equal(module(w), w)
    fresh = make()
    fresh.load_state_dict(module.state_dict())
    assert fresh.enabled is False and torch.equal(fresh(w), w)
