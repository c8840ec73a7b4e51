"""Packed inference: exactness against the fake-binarized layers, native kernel vs pure torch, size, errors."""
import copy
import io
import itertools

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import (
    PackedConv1d,
    PackedConv2d,
    PackedFormatError,
    PackedLinear,
    UnsupportedLayerError,
    available_isas,
    kernel_available,
    pack_binary_model,
    set_isa,
)
from bnn.deploy import functional as BF

from test_packed_graph import channels_last_everywhere

ACTS = {
    "sign": ops.BasicInputBinarizer,
    "approx": ops.ApproxSignBinarizer,
    "swish": ops.SwishSignBinarizer,
    "stochastic": ops.StochasticInputBinarizer,
    "rsign": ops.InputBiasBinarizer,
    "threshold": ops.ScaleThresholdBinarizer,
    "kbit": ops.KBitActivationQuantizer.with_args(bits=4),
    "none": None,
}
WEIGHTS = {
    "xnor": ops.XNORWeightBinarizer,
    "xnor_centered": ops.XNORWeightBinarizer.with_args(center_weights=True),
    "sign_only": ops.XNORWeightBinarizer.with_args(compute_alpha=False),
    "dorefa": ops.DoReFaWeightBinarizer,
    "magnitude": ops.MagnitudeAwareWeightBinarizer,
    "gradual_done": ops.GradualWeightBinarizer.with_args(bin_ratio=1.0, p=1.0),
}
POSTS = {"none": None, "scale": ops.BasicScaleBinarizer, "biasscale": ops.BiasScaleBinarizer, "xnor": ops.XNORScaleBinarizer,
         "shortcut": ops.RealShortcut}
LAYERS = {
    "conv3x3": lambda: nn.Conv2d(8, 40, 3, padding=1),
    "conv_s2_nobias": lambda: nn.Conv2d(70, 16, 3, stride=2, padding=1, bias=False),
    "conv_dil_groups": lambda: nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=2),
    "conv_5x3_pad": lambda: nn.Conv2d(6, 8, (5, 3), stride=(1, 2), padding=(2, 3)),
    "conv1x1_s2": lambda: nn.Conv2d(64, 33, 1, stride=2),
    "conv_s2_double": lambda: nn.Conv2d(16, 32, 3, stride=2, padding=1),
    "conv1d": lambda: nn.Conv1d(10, 7, 5, stride=2, padding=2, dilation=1),
    "conv1d_groups": lambda: nn.Conv1d(12, 6, 3, padding=1, groups=3, bias=False),
    "linear": lambda: nn.Linear(100, 20),
}
INPUT = {"conv1d": (3, 10, 17), "conv1d_groups": (2, 12, 9), "linear": (5, 100),
         "conv_s2_nobias": (2, 70, 9, 7), "conv1x1_s2": (2, 64, 5, 5), "conv_s2_double": (2, 16, 7, 9)}


def _randomize(model):
    """Move every learned binarizer parameter and BN statistic away from its initial value."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, ops.InputBiasBinarizer):
                mod.bias.normal_(0, 0.3)
            elif isinstance(mod, ops.ScaleThresholdBinarizer):
                mod.threshold_param.normal_(0, 1.0)
                mod.scale_param.fill_(0.3)
            elif isinstance(mod, ops.KBitActivationQuantizer):
                mod.running_absmax.fill_(2.0)
            elif isinstance(mod, (ops.BasicScaleBinarizer, ops.BiasScaleBinarizer)):
                mod.scale.uniform_(0.5, 2.0)
                if hasattr(mod, "bias"):
                    mod.bias.normal_()
            elif isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.normal_()
                mod.bias.data.normal_()
    return model


def _binary(layer, act="sign", weight="xnor", post="none"):
    bc = bnn.BConfig(activation_pre_process=ACTS[act], weight_pre_process=WEIGHTS[weight],
                     activation_post_process=POSTS[post])
    return _randomize(bnn.prepare_binary_model(layer, bc)).eval()


def _check(fake, packed, x):
    with torch.no_grad():
        ref = fake(x)
        out = packed(x)
    assert out.shape == ref.shape
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= tol


def _input(kind):
    x = torch.randn(INPUT.get(kind, (2, 8, 7, 6)) if kind != "conv_dil_groups" else (2, 8, 7, 6))
    if kind == "conv_5x3_pad":
        x = torch.randn(2, 6, 8, 9)
    x.view(-1)[::7] = 0.0  # sign(0) = +1 must match
    return x


# every layer kind with the plain sign, every option on a conv, and real-input modes on every kind
GRID = (
    [(k, "sign", "xnor", "none") for k in LAYERS]
    + [(k, "rsign", "dorefa", "biasscale") for k in LAYERS]
    + [(k, "threshold", "xnor", "scale") for k in LAYERS]
    + [("conv3x3", a, "xnor", "none") for a in ACTS]
    + [("conv_dil_groups", "approx", w, "none") for w in WEIGHTS]
    + [(k, "swish", "magnitude", p) for k, p in itertools.product(["conv3x3", "conv1d", "linear"], POSTS)
       if p != "shortcut"]
    # Bi-Real's shortcut: channels repeated (8 -> 40), pooled and repeated (stride 2, 16 -> 32), averaged (100 -> 20)
    + [(k, "rsign", "magnitude", "shortcut") for k in ("conv3x3", "conv_s2_double", "linear")]
    + [("conv_s2_nobias", "kbit", "xnor_centered", "xnor"), ("linear", "none", "sign_only", "biasscale")]
)


@pytest.mark.parametrize("kind,act,weight,post", GRID, ids=["-".join(g) for g in GRID])
def test_packed_layer_matches_fake_binarized(kind, act, weight, post):
    fake = _binary(LAYERS[kind](), act, weight, post)
    packed = pack_binary_model(fake)
    expected = {"linear": PackedLinear, "conv1d": PackedConv1d, "conv1d_groups": PackedConv1d}.get(kind, PackedConv2d)
    assert isinstance(packed, expected)
    assert packed.binary_input == (act in ("sign", "approx", "swish", "stochastic", "rsign"))
    x = _input(kind)
    _check(fake, packed, x)
    packed.use_native = False  # the pure-torch path gives the same numbers
    _check(fake, packed, x)
    _check(fake.double(), packed.double(), x.double())  # float64: pure-torch path


@pytest.mark.skipif(not kernel_available(), reason="native kernel not built")
@pytest.mark.parametrize("isa", available_isas() or ["scalar"])
def test_native_kernel_equals_torch_path_exactly(isa):
    shapes = [  # N, C, H, W, Cout, k, stride, pad, dilation, groups
        (2, 64, 8, 8, 64, 3, 1, 1, 1, 1), (1, 3, 5, 7, 5, 3, 2, 1, 1, 1), (2, 70, 6, 5, 40, 3, 1, 2, 2, 1),
        (1, 128, 9, 9, 66, 1, 2, 0, 1, 1), (2, 16, 7, 7, 8, 3, 1, 1, 1, 2), (1, 8, 6, 6, 8, 3, 1, 1, 1, 8),
        (3, 130, 4, 4, 33, 5, 1, 2, 1, 1), (1, 256, 3, 3, 32, 3, 1, 1, 1, 1),
        (8, 64, 56, 56, 64, 3, 1, 1, 1, 1), (8, 64, 56, 56, 128, 3, 2, 1, 1, 1),  # large outputs: streaming stores
    ]
    set_isa(isa)
    try:
        for n, c, h, w, cout, k, s, p, d, g in shapes:
            x = torch.randn(n, c, h, w)
            x.view(-1)[::5] = 0.0
            neg = torch.rand(cout, c // g, k, k) < 0.5
            words = BF.pack_weight_bits(neg, g)
            assert torch.equal(BF.unpack_weight_signs(words, cout, c // g, (k, k)), torch.where(neg, -1.0, 1.0))
            mul, add, thr = torch.rand(cout) + 0.5, torch.randn(cout), torch.randn(c) * 0.3
            for t, a in ((None, None), (thr, add)):
                args = (x, words, mul, a, t, cout, (k, k), (s, s), (p, p), (d, d), g)
                ref = BF.binary_conv(*args, use_native=False)
                out = BF.binary_conv(*args, use_native=True)
                assert torch.equal(out, ref), (isa, n, c, h, w, cout, k, s, p, d, g)
                # the integer dot products themselves, against a float conv of the +-1 tensors
                xb = torch.where(x < (0 if t is None else t.view(1, -1, 1, 1)), -1.0, 1.0)
                dot = nn.functional.conv2d(xb, torch.where(neg, -1.0, 1.0), None, s, p, d, g)
                assert torch.equal(out, dot * mul.view(1, -1, 1, 1) + (0 if a is None else a.view(1, -1, 1, 1)))
    finally:
        set_isa(None)


def _resnet18_fake():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=1000)
    bc = bnn.BConfig(activation_pre_process=ops.InputBiasBinarizer, weight_pre_process=ops.XNORWeightBinarizer,
                     activation_post_process=ops.BasicScaleBinarizer)
    model = bnn.prepare_binary_model(model, bc, ignore_layers_name=["_first_", "_last_"])
    return _randomize(model).eval()


def test_resnet18_packed_exact_small_and_loadable():
    fake = _resnet18_fake()
    packed = pack_binary_model(fake)
    assert isinstance(packed.conv1, nn.Conv2d) and not isinstance(packed.conv1, PackedConv2d)  # float stays float
    assert isinstance(packed.fc, nn.Linear) and type(packed.fc) is not PackedLinear
    assert sum(isinstance(m, PackedConv2d) for m in packed.modules()) == 19  # 16 3x3 + 3 downsample 1x1
    # every BatchNorm folded: 19 into the packed convs' epilogues, one into the float stem
    assert not any(isinstance(m, nn.BatchNorm2d) for m in packed.modules())
    assert sum(isinstance(m, PackedConv2d) and m.shift is not None for m in packed.modules()) == 19
    x = torch.randn(2, 3, 64, 64)
    _check(fake, packed, x)
    assert channels_last_everywhere(packed, x) == []  # one memory layout end to end
    for m in packed.modules():
        if isinstance(m, PackedConv2d):
            m.use_native = False
    _check(fake, packed, x)

    buf = io.BytesIO()
    torch.save(packed, buf)
    size = buf.tell()
    assert size <= 4.2e6, size
    float_buf = io.BytesIO()
    torch.save(fake.state_dict(), float_buf)
    assert float_buf.tell() > 10 * size
    # 1 bit per binarized weight in memory
    for m in packed.modules():
        if isinstance(m, PackedConv2d):
            assert m.packed_weight.numel() * 64 == m.packed_weight_numel
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), packed(x))
    # state dict round trip into a freshly packed copy
    other = copy.deepcopy(packed)
    for m in other.modules():
        if isinstance(m, PackedConv2d):
            m.packed_weight.zero_()
            m.scale.fill_(1.0)
    other.load_state_dict(packed.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x), packed(x))
    s = bnn.summary(packed, (3, 64, 64), print_fn=None)
    row = next(r for r in s.layers if r.name == "layer1.0.conv1")
    # the folded BatchNorm is the layer's bias now
    assert row.weight_bits == 1 and row.float_bytes == (64 * 64 * 9 + 64) * 4 and row.bytes < row.float_bytes / 20


def test_training_mode_is_an_error_naming_the_layer():
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    model = bnn.prepare_binary_model(model, bnn.BConfig(ops.BasicInputBinarizer, None, ops.XNORWeightBinarizer))
    with pytest.raises(RuntimeError, match="'0'.*training mode"):
        pack_binary_model(model)
    model.eval()
    model[1].train()
    with pytest.raises(RuntimeError, match="'1'.*training mode"):
        pack_binary_model(model)


def test_unsupported_layer_error_or_warning():
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    bc = bnn.BConfig(ops.BasicInputBinarizer, None, ops.XNORWeightBinarizer)
    half = bnn.BConfig(ops.BasicInputBinarizer, None, ops.GradualWeightBinarizer.with_args(bin_ratio=0.5, p=1.0))
    model = bnn.prepare_binary_model(model, bc, custom_config_layers_name={"1": half}).eval()
    with pytest.raises(UnsupportedLayerError, match="layer '1'.*GradualWeightBinarizer"):
        pack_binary_model(model)
    with pytest.warns(UserWarning, match="layer '1'.*left unpacked"):
        packed = pack_binary_model(model, on_unsupported="warn")
    assert isinstance(packed[0], PackedConv2d) and isinstance(packed[1], bnn.layers.Conv2d)
    x = torch.randn(1, 4, 9, 9)
    _check(model, packed, x)
    with pytest.raises(ValueError, match="on_unsupported"):
        pack_binary_model(model, on_unsupported="ignore")


def test_layers_not_binarized_stay_and_original_untouched():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    bc = bnn.BConfig(ops.BasicInputBinarizer, None, ops.XNORWeightBinarizer)
    model = bnn.prepare_binary_model(model, bc, custom_config_layers_name={"0": bnn.BConfig()}).eval()
    packed = pack_binary_model(model)
    assert isinstance(packed[0], nn.Conv2d) and not isinstance(packed[0], PackedConv2d)
    assert isinstance(packed[2], PackedConv2d)
    assert isinstance(model[2], bnn.layers.Conv2d)  # not in place by default
    _check(model, packed, torch.randn(2, 3, 8, 8))
    with pytest.raises(RuntimeError, match="inference only"):
        packed.train()(torch.randn(2, 3, 8, 8))


def test_incompatible_format_version_is_a_clear_error():
    layer = pack_binary_model(_binary(nn.Conv2d(8, 8, 3, padding=1)))
    state = layer.state_dict()
    state["_extra_state"] = {"bnn_packed_format": 999}
    with pytest.raises(PackedFormatError, match="version 999"):
        layer.load_state_dict(state)
    layer.format_version = 999  # as if pickled by another bnn
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    with pytest.raises(PackedFormatError, match="re-pack"):
        torch.load(buf, weights_only=False)


@pytest.mark.skipif(not kernel_available(), reason="native kernel not built")
def test_reused_output_buffer_never_overwrites_a_result_still_alive():
    """A result (or a view of one) stays valid after later calls, also from other threads (fresh outputs)."""
    import threading

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    bconfig = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)
    packed = bnn.pack_binary_model(bnn.prepare_binary_model(conv, bconfig).eval())
    xs = [torch.randn(1, 16, 12, 12) for _ in range(4)]
    with torch.no_grad():
        expected = [packed(x).clone() for x in xs]
        kept = packed(xs[0])  # alive while the next calls run
        view = packed(xs[1])[0, :4]  # only a view of the second result stays alive
        third = packed(xs[2])
        assert torch.equal(kept, expected[0]) and torch.equal(view, expected[1][0, :4])
        assert torch.equal(third, expected[2])
        as_numpy = packed(xs[3]).numpy()  # a numpy array shares the storage too
        packed(xs[0])
        assert torch.equal(torch.from_numpy(as_numpy), expected[3])
        for _ in range(3):  # results dropped at once: the buffer is reused, values stay right
            assert torch.equal(packed(xs[1]), expected[1])

        errors = []

        def worker(i):
            for _ in range(20):
                if not torch.equal(packed(xs[i]), expected[i]):
                    errors.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors


def test_batchnorm_after_a_shortcut_layer_folds_into_its_epilogue_and_gain():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16))
    fake = bnn.prepare_binary_model(model, bnn.presets.relu_friendly(), ignore_layers_name=["_first_"])
    fake.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics and the learned thresholds' data start
            fake(torch.randn(16, 3, 9, 9))
    _randomize(fake).eval()
    for bn in (fake[4], fake[7]):
        bn.weight.data.uniform_(0.5, 2.0)
    packed = pack_binary_model(fake)
    assert [type(packed[i]) for i in (1, 4, 7)] == [nn.Identity] * 3  # every BatchNorm folded
    for i in (3, 6):
        assert isinstance(packed[i].post_process, ops.RealShortcut) and packed[i].post_process.gain is not None
    _check(fake, packed, torch.randn(2, 3, 9, 9))
    kept = pack_binary_model(fake, fold_batchnorm=False)
    assert kept[6].post_process.gain is None and isinstance(kept[7], nn.BatchNorm2d)
    _check(fake, kept, torch.randn(2, 3, 9, 9))


def test_relu_friendly_torchvision_resnet18_packs_exactly_with_every_batchnorm_folded():
    tv = pytest.importorskip("torchvision")
    fake = bnn.prepare_binary_model(tv.models.resnet18(num_classes=10), bnn.presets.relu_friendly(),
                                    ignore_layers_name=bnn.presets.FLOAT_LAYERS)
    with torch.no_grad():
        fake.train()(torch.randn(8, 3, 32, 32))  # the thresholds' data start and running statistics
    fake.eval()
    packed = pack_binary_model(fake)
    shortcuts = [m.post_process for m in packed.modules() if isinstance(m, PackedConv2d)]
    assert len(shortcuts) == 16 and all(isinstance(p, ops.RealShortcut) and p.gain is not None for p in shortcuts)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in packed.modules())
    _check(fake, packed, torch.randn(2, 3, 32, 32))
