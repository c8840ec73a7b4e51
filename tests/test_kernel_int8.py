"""int8-input / 1-bit-weight layers: the native kernel against its pure-torch twin (bit-identical), the
integer dot products against a float conv of the codes, and packed layers against their fake-quantized
originals (the gradual-binarization recipe's target layers)."""
import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import PackedConv2d, PackedLinear, available_isas, kernel_available, pack_binary_model, set_isa
from bnn.deploy import functional as BF
from bnn.deploy import kernel as K

native_only = pytest.mark.skipif(not kernel_available(), reason="native kernel not built")

# N, C, H, W, Cout, k, stride, pad: input channels not multiples of 4, outputs not multiples of 16, odd
# images, stride 2, padding 0-2, the 1x1 strided downsample, batch 1 and 8, K over 64 steps of 4 channels
SHAPES = [
    (1, 3, 5, 7, 5, 3, 1, 1), (8, 13, 7, 9, 21, 3, 2, 1), (1, 64, 6, 6, 48, 3, 1, 2), (8, 30, 9, 9, 17, 1, 2, 0),
    (1, 130, 5, 5, 33, 3, 2, 1), (1, 300, 4, 4, 16, 3, 1, 1), (8, 8, 1, 1, 8, 1, 1, 0),
]


def _input(n, c, h, w, step, bits, gen):
    """Random floats, plus exact ties (k + 0.5) * step and values beyond both ends of the grid."""
    qmax = 2 ** (bits - 1) - 1
    x = torch.randn(n, c, h, w, generator=gen) * qmax * step / 2
    flat = x.view(-1)
    flat[::5] = (torch.randint(-qmax - 1, qmax, (flat[::5].numel(),), generator=gen) + 0.5) * step
    flat[1::11] = 3 * qmax * step
    flat[2::13] = -3 * qmax * step
    return x


@native_only
@pytest.mark.parametrize("isa", available_isas() or ["scalar"])
@pytest.mark.parametrize("bits", [8, 4])
def test_native_equals_torch_twin_and_exact_integer_dots(isa, bits):
    gen = torch.Generator().manual_seed(bits)
    step = torch.tensor(0.0371)
    set_isa(isa)
    try:
        for n, c, h, w, cout, k, s, p in SHAPES:
            x = _input(n, c, h, w, step, bits, gen)
            neg = torch.rand(cout, c, k, k, generator=gen) < 0.5
            words = BF.pack_weight_bits(neg)
            consts = K.int8_conv_constants(words, cout, c, (k, k))
            mul, add = torch.rand(cout, generator=gen) + 0.5, torch.randn(cout, generator=gen)
            geo = (cout, (k, k), (s, s), (p, p), (1, 1))
            for a in (None, add):
                out = K.int8_conv(x, consts, step, bits, mul, a, *geo)
                assert torch.equal(out, K.int8_conv_reference(x, words, step, bits, mul, a, *geo)), (isa, n, c, cout)
            # the integer dot products: a float64 conv of the codes (x / step rounded in float32, like the
            # fake quantizer) with the +-1 weights
            dot = K.int8_conv(x, consts, step, bits, torch.ones(cout), None, *geo)
            codes = torch.clamp(torch.round(x / step), -2 ** (bits - 1), 2 ** (bits - 1) - 1).double()
            ref = nn.functional.conv2d(codes, torch.where(neg, -1.0, 1.0).double(), None, s, p)
            assert torch.equal(dot.double(), ref)
            assert codes.min() == -2 ** (bits - 1) and codes.max() == 2 ** (bits - 1) - 1  # both clamps exercised
    finally:
        set_isa(None)


@native_only
@pytest.mark.parametrize("isa", available_isas() or ["scalar"])
def test_output_larger_than_l2_streams_the_same_numbers(isa):
    """A 3.2 MB output (more than 1 MB per thread) takes the AVX2 tiles' streaming stores: same numbers."""
    gen = torch.Generator().manual_seed(5)
    step = torch.tensor(0.05)
    x = torch.randn(8, 64, 56, 56, generator=gen).contiguous(memory_format=torch.channels_last)
    neg = torch.rand(128, 64, 1, 1, generator=gen) < 0.5
    words = BF.pack_weight_bits(neg)
    consts = K.int8_conv_constants(words, 128, 64, (1, 1))
    mul, add = torch.rand(128, generator=gen) + 0.5, torch.randn(128, generator=gen)
    geo = (128, (1, 1), (2, 2), (0, 0), (1, 1))
    set_isa(isa)
    try:
        out = K.int8_conv(x, consts, step, 8, mul, add, *geo)
    finally:
        set_isa(None)
    assert out.numel() * 4 > 3 << 20
    assert torch.equal(out, K.int8_conv_reference(x, words, step, 8, mul, add, *geo))


@native_only
def test_linear_rows_of_any_rank():
    gen = torch.Generator().manual_seed(1)
    step = torch.tensor(0.05)
    x = torch.randn(2, 3, 70, generator=gen)
    words = BF.pack_weight_bits(torch.rand(19, 70, generator=gen) < 0.5)
    consts = K.int8_conv_constants(words, 19, 70, ())
    mul = torch.rand(19, generator=gen)
    out = K.int8_conv(x, consts, step, 8, mul, None, 19)
    assert out.shape == (2, 3, 19)
    assert torch.equal(out, K.int8_conv_reference(x, words, step, 8, mul, None, 19))


def _fake(model, bits=8, ratio=1.0):
    bc = bnn.BConfig(activation_pre_process=ops.KBitActivationQuantizer.with_args(bits=bits, ratio=ratio),
                     weight_pre_process=ops.XNORWeightBinarizer)
    fake = bnn.prepare_binary_model(model, bc)
    fake.train()
    with torch.no_grad():
        fake(torch.randn(4, *_IN[type(model)]))  # sets the quantizers' running maxima
    return fake.eval()


_IN = {nn.Sequential: (40, 9, 9)}


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(40, 24, 3, padding=1, bias=True), nn.ReLU(), nn.Conv2d(24, 16, 1, stride=2),
                         nn.Flatten(), nn.Linear(16 * 25, 10))


@pytest.mark.parametrize("bits", [8, 5])
def test_packed_int8_layers_match_fake_quantized_model(bits):
    fake = _fake(_model(), bits)
    packed = pack_binary_model(fake)
    kinds = [type(m) for m in packed.modules() if isinstance(m, (PackedConv2d, PackedLinear))]
    assert kinds == [PackedConv2d, PackedConv2d, PackedLinear]
    assert all(not m.binary_input for m in packed.modules() if isinstance(m, (PackedConv2d, PackedLinear)))
    x = torch.randn(3, 40, 9, 9)
    with torch.no_grad():
        ref = fake(x)
        out = packed(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        layers = [m for m in packed.modules() if isinstance(m, (PackedConv2d, PackedLinear))]
        assert all(("_int8_consts" in m.__dict__) == kernel_available() for m in layers)  # the native int8 path ran
        for m in packed.modules():
            if isinstance(m, (PackedConv2d, PackedLinear)):
                m.use_native = False
        assert torch.equal(packed(x), out)  # the pure-torch twin gives the same numbers


def test_blended_quantizer_keeps_the_float_path():
    """ratio < 1 mixes float and quantized inputs: no integer codes, the generic path (still exact enough)."""
    fake = _fake(_model(), 8, ratio=0.5)
    packed = pack_binary_model(fake)
    x = torch.randn(2, 40, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), fake(x), rtol=1e-4, atol=1e-4)


@native_only
def test_constants_of_another_layer_are_refused():
    words = BF.pack_weight_bits(torch.rand(16, 8, 3, 3) < 0.5)
    consts = K.int8_conv_constants(words, 16, 8, (3, 3))
    x = torch.randn(1, 9, 5, 5)  # one channel more than the constants hold
    with pytest.raises(ValueError, match="not made for 9 -> 16 channels"):
        K.int8_conv(x, consts, torch.tensor(0.1), 8, torch.ones(16), None, 16, (3, 3), (1, 1), (1, 1), (1, 1))


@native_only
def test_cached_int8_plan_follows_buffers_changed_in_place():
    """A packed int8 layer keeps its kernel plan between calls of one shape; an in-place change of the quantizer's
    range, the scales or the weight words, a new storage given to one of them (``.data =``, which keeps the
    version), or switching the quantizer off, must reach the next call."""
    fake = _fake(_model(), 8)
    packed = pack_binary_model(fake)
    conv = next(m for m in packed.modules() if isinstance(m, PackedConv2d))
    x = torch.randn(2, 40, 9, 9)
    with torch.no_grad():
        first = conv(x)
        assert "_int8_plan" in conv.__dict__
        def swap(t, new):
            version = t._version
            t.data = new
            assert t._version == version

        changes = [lambda: conv.input_quantizer.running_absmax.mul_(0.5), lambda: conv.scale.mul_(3.0),
                   lambda: conv.packed_weight.bitwise_not_(),
                   lambda: swap(conv.packed_weight, ~conv.packed_weight),
                   lambda: swap(conv.scale, conv.scale * 0.25),
                   lambda: swap(conv.input_quantizer.running_absmax, conv.input_quantizer.running_absmax * 2)]
        for change in changes:
            change()
            out = conv(x)
            conv.use_native = False
            assert torch.equal(out, conv(x))  # the pure-torch twin with the changed buffers
            conv.use_native = None
            assert not torch.equal(out, first)
            first = out
        conv.input_quantizer.enabled = False  # float inputs now: the generic path, not the stale plan
        torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight_signs(), None, 1, 1)
                                   * conv.scale.view(1, -1, 1, 1) + conv.shift.view(1, -1, 1, 1), rtol=1e-4, atol=1e-4)
