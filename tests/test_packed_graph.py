"""Packed models as whole graphs: input checks, BatchNorm folding, layout, packed Linear, torch.compile/export."""
import warnings

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import PackedConv1d, PackedConv2d, PackedLinear, kernel_available, pack_binary_model
from bnn.deploy import functional as BF


def _bconfig(act=ops.InputBiasBinarizer, post=None):
    return bnn.BConfig(activation_pre_process=act, weight_pre_process=ops.XNORWeightBinarizer,
                       activation_post_process=post)


def _randomize(model):
    """Random BN statistics and RSign biases, so that folding and thresholds are exercised."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
                if mod.weight is not None:
                    mod.weight.normal_()
                    mod.bias.normal_()
            elif isinstance(mod, ops.InputBiasBinarizer):
                mod.bias.normal_(0, 0.3)
    return model


def _prepare(net, **kwargs):
    return _randomize(bnn.prepare_binary_model(net, _bconfig(**kwargs.pop("bconfig", {})), **kwargs)).eval()


def _close(out, ref):
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def _both_paths(packed):
    """Yield once with the native kernel (when built), once with the pure-torch path."""
    layers = [m for m in packed.modules() if isinstance(m, (PackedConv1d, PackedConv2d, PackedLinear))]
    for native in ([None, False] if kernel_available() else [False]):
        for m in layers:
            m.use_native = native
        yield native
    for m in layers:
        m.use_native = None


def _matches_on_both_paths(fake, packed, x):
    with torch.no_grad():
        ref = fake(x)
        for _ in _both_paths(packed):
            _close(packed(x), ref)


# -- bad inputs: a one-line error naming the layer, never a read outside the buffers ----------------------------
def _packed_seq(*layers):
    return pack_binary_model(_prepare(nn.Sequential(*layers)))


BAD_INPUTS = [
    # (layer, input shape or tensor, error type, message fragment)
    (lambda: nn.Conv2d(8, 8, 3, padding=1), (1, 5, 6, 6), ValueError, "expects 8 input channels"),
    (lambda: nn.Conv2d(512, 8, 3, padding=1), (1, 1, 6, 6), ValueError, "expects 512 input channels"),
    (lambda: nn.Conv2d(8, 8, 3, padding=1), (8, 6, 6), ValueError, "4-d input"),
    (lambda: nn.Conv2d(8, 8, 3, padding=1), (1, 1, 8, 6, 6), ValueError, "4-d input"),
    (lambda: nn.Conv2d(8, 8, 3), (1, 8, 2, 6), ValueError, "smaller than"),
    (lambda: nn.Conv1d(8, 8, 3), (1, 5, 9), ValueError, "expects 8 input channels"),
    (lambda: nn.Conv1d(8, 8, 3), (5, 9), ValueError, "3-d input"),
    (lambda: nn.Linear(100, 4), (3, 99), ValueError, r"\[\*, 100\]"),
    (lambda: nn.Linear(100, 4), torch.ones(3, 100, dtype=torch.int64), TypeError, "floating-point"),
    (lambda: nn.Conv2d(8, 8, 3, padding=1), torch.ones(1, 8, 4, 4, dtype=torch.int32), TypeError, "floating-point"),
    (lambda: nn.Conv2d(8, 8, 3, padding=1), torch.empty(1, 8, 4, 4, device="meta"), ValueError, "is on meta"),
]


@pytest.mark.parametrize("case", range(len(BAD_INPUTS)))
def test_bad_input_is_a_one_line_error_naming_the_layer(case):
    make, x, exc, fragment = BAD_INPUTS[case]
    packed = _packed_seq(nn.Identity(), make())
    x = torch.randn(x) if isinstance(x, tuple) else x
    for _ in _both_paths(packed):
        with pytest.raises(exc, match=fragment) as info:
            packed(x)
        msg = str(info.value)
        assert msg.startswith("packed layer '1'") and "\n" not in msg


@pytest.mark.skipif(not kernel_available(), reason="native kernel not built")
def test_wrong_channels_after_a_good_call_still_raise():
    """The cached plan of a good call must not let a differently shaped input through to the kernel."""
    packed = _packed_seq(nn.Conv2d(8, 8, 3, padding=1))
    good = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        first = packed(good)
        with pytest.raises(ValueError, match="packed layer '0': expects 8 input channels"):
            packed(torch.randn(1, 5, 6, 6))
        with pytest.raises(TypeError, match="floating-point"):
            packed(torch.ones(1, 8, 6, 6, dtype=torch.int32))
        with pytest.raises(ValueError, match=r"expects sign words \[N, H, W, 1\] \(int64, 8 channels\)"):
            packed(torch.ones(1, 8, 6, 6, dtype=torch.int64))  # int64 is sign words [N, H, W, words]
        assert torch.equal(packed(good), first)  # deterministic: nothing read outside the buffers


def test_replaced_buffer_of_the_wrong_size_is_an_error():
    packed = _packed_seq(nn.Conv2d(8, 8, 3, padding=1))
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        packed(x)
        packed[0].scale = torch.ones(3)  # the kernel would read 8 floats
        for _ in _both_paths(packed):
            with pytest.raises(ValueError, match="packed layer '0': buffer 'scale' has shape \\[3\\]"):
                packed(x)


# -- BatchNorm folding --------------------------------------------------------------------------------------------
class _Residual(nn.Module):
    """conv -> BN -> + conv output: the conv's output has two users, its BN must not be folded."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared_bn = nn.BatchNorm2d(8)  # called twice: never folded
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(8)  # folds

    def forward(self, x):
        x = self.stem(x)
        y = self.conv(x)
        y = self.bn(y) + y
        z = self.shared_bn(self.conv2(y)) + self.shared_bn(self.conv3(y))
        return self.bn4(self.conv4(z))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent branch: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_fold_only_provably_safe_pairs():
    fake = _prepare(_Residual(), ignore_layers_name=["stem"])
    packed = pack_binary_model(fake)
    assert isinstance(packed.bn4, nn.Identity) and packed.conv4.shift is not None
    assert isinstance(packed.bn, nn.BatchNorm2d) and isinstance(packed.shared_bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 7, 7)
    _matches_on_both_paths(fake, packed, x)


def test_fold_float_and_packed_convs_and_skip_xnor_post_and_batch_statistics():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, track_running_stats=False))
    xnor_post = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer,
                            activation_post_process=ops.XNORScaleBinarizer)
    fake = _prepare(net, ignore_layers_name=["0"], custom_config_layers_name={"4": xnor_post})
    packed = pack_binary_model(fake)
    assert isinstance(packed[1], nn.Identity) and type(packed[0]) is nn.Conv2d  # float conv + BN fused
    assert isinstance(packed[3], nn.Identity)  # packed conv + BN folded
    assert isinstance(packed[5], nn.BatchNorm2d)  # after XNOR-Net's output scale (needs the float input): kept
    assert isinstance(packed[7], nn.BatchNorm2d)  # batch statistics in eval: kept
    assert isinstance(pack_binary_model(fake, fold_batchnorm=False)[3], nn.BatchNorm2d)
    x = torch.randn(2, 3, 6, 6)
    _matches_on_both_paths(fake, packed, x)


def test_fold_conv1d_and_leave_linear():
    """Conv1d -> BatchNorm1d folds; Linear -> BatchNorm1d stays (dim 1 is the features only for 2-d inputs)."""
    net = nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.Flatten(), nn.Linear(16 * 7, 8),
                        nn.BatchNorm1d(8))
    fake = _prepare(net)
    packed = pack_binary_model(fake)
    assert isinstance(packed[0], PackedConv1d) and isinstance(packed[1], nn.Identity)
    assert isinstance(packed[3], PackedLinear) and isinstance(packed[4], nn.BatchNorm1d)
    _matches_on_both_paths(fake, packed, torch.randn(3, 8, 7))


@pytest.mark.parametrize("act", ["kbit", "threshold"])
def test_fold_into_real_input_packed_layers(act):
    """Real-valued-input packed layers (k-bit codes, scaled threshold) share the epilogue: BN folds there too."""
    quant = {"kbit": ops.KBitActivationQuantizer.with_args(bits=4), "threshold": ops.ScaleThresholdBinarizer}[act]
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Linear(5, 3))
    fake = _prepare(net, bconfig={"act": quant})
    with torch.no_grad():
        for mod in fake.modules():
            if isinstance(mod, ops.KBitActivationQuantizer):
                mod.running_absmax.fill_(2.0)
    packed = pack_binary_model(fake)
    assert isinstance(packed[0], PackedConv2d) and not packed[0].binary_input and isinstance(packed[1], nn.Identity)
    _matches_on_both_paths(fake, packed, torch.randn(2, 8, 6, 5))


def test_untraceable_model_is_left_unfolded_with_a_warning():
    fake = _prepare(_Untraceable())
    with pytest.warns(UserWarning, match="cannot trace _Untraceable.*unfolded"):
        packed = pack_binary_model(fake)
    assert isinstance(packed.bn, nn.BatchNorm2d)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        _close(packed(x), fake(x))


def channels_last_everywhere(model, x):
    """Every 4-d float activation of a forward pass is channels-last (one memory layout end to end; the sign words
    of chained packed convs are [N, H, W, words], pixel-major by definition)."""
    seen = []

    def hook(mod, inputs, out):
        for t in list(inputs) + [out]:
            if (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 4 and t.shape[1] > 1
                    and t.shape[2] * t.shape[3] > 1):
                seen.append((type(mod).__name__, t.is_contiguous(memory_format=torch.channels_last)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [name for name, cl in seen[1:] if not cl]  # the network input itself is the user's NCHW tensor


@pytest.mark.parametrize("block", ["basic", "bireal", "bn_first"])
def test_bnn_resnet_folds_and_stays_channels_last(block):
    model = bnn.models.resnet18(num_classes=10, block=block, stem="cifar", width=16)
    fake = _prepare(model, ignore_layers_name=model.float_layer_names())
    packed = pack_binary_model(fake)
    packed_convs = [n for n, m in packed.named_modules() if isinstance(m, PackedConv2d)]
    bns = [n for n, m in packed.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if block == "bn_first":  # BN-first blocks: no BN follows a packed conv; the shortcut BNs follow float convs
        assert len(bns) == 16 and len(packed_convs) == 16
    else:  # every BN folded (into a packed conv, the float stem, or a float shortcut conv)
        assert bns == [] and len(packed_convs) == 16
    x = torch.randn(2, 3, 16, 16)
    _matches_on_both_paths(fake, packed, x)
    assert channels_last_everywhere(packed, x) == []


def test_reactnet_folds_every_batchnorm():
    """RPReLU checks its input's shape (untraceable by torch.fx): as a leaf it does not stop the folding."""
    model = bnn.models.reactnet_a(num_classes=10, width_mult=0.25, stem="cifar")
    fake = _prepare(model, ignore_layers_name=model.float_layer_names())
    packed = pack_binary_model(fake)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in packed.modules())
    x = torch.randn(1, 3, 16, 16)
    _matches_on_both_paths(fake, packed, x)
    assert channels_last_everywhere(packed, x) == []


# -- packed Linear on the xnor-popcount kernel ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 100), (2, 3, 130), (130,), (1, 64)])
def test_packed_linear_is_exact(shape):
    fake = _prepare(nn.Linear(shape[-1], 33))
    packed = pack_binary_model(fake)
    assert isinstance(packed, PackedLinear)
    x = torch.randn(shape)
    x.view(-1)[::9] = 0.0
    with torch.no_grad():
        ref = fake(x)
        outs = [packed(x) for _ in _both_paths(packed)]
    for out in outs:
        _close(out, ref)
    assert all(torch.equal(out, outs[0]) for out in outs)  # native and pure torch bit-identical
    # the integer dot products: a float linear of the +-1 tensors, then scale and bias
    xb = torch.where(x < packed.input_threshold, -1.0, 1.0)
    dot = xb @ packed.weight_signs().t()
    assert torch.equal(outs[0], dot * packed.scale + packed.shift)


# -- torch.compile / torch.export ----------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv1d = nn.Conv1d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = self.bn(self.conv(x)).flatten(2)  # [N, 16, 16]
        return self.fc(self.conv1d(x).flatten(1))


def _tiny():
    fake = _prepare(_Tiny(), ignore_layers_name=["stem"])
    return fake, pack_binary_model(fake)


def test_torch_compile_fullgraph_gives_the_same_outputs():
    fake, packed = _tiny()
    x = torch.randn(2, 3, 8, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        ref = fake(x)
        for _ in _both_paths(packed):
            eager = packed(x)
            compiled = torch.compile(packed, fullgraph=True, backend="aot_eager")
            assert torch.equal(compiled(x), eager)
            _close(eager, ref)
            torch._dynamo.reset()


def test_torch_export_gives_the_same_outputs_and_one_op_per_packed_layer():
    fake, packed = _tiny()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        eager = packed(x)
        ep = torch.export.export(packed, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", max=64)}})
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    expected = 3 if kernel_available() else 0
    assert targets.count(torch.ops.bnn.binary_conv.default) == expected
    with torch.no_grad():
        assert torch.equal(ep.module()(x), eager)
        assert torch.equal(ep.module()(x[:1]), packed(x[:1]))


def test_custom_op_fake_matches_the_real_layout():
    """The fake implementation promises the real output's shape and strides (torch.library.opcheck)."""
    for nd, x in ((2, torch.randn(2, 8, 5, 6)), (1, torch.randn(2, 8, 7)), (0, torch.randn(3, 2, 8))):
        neg = torch.rand((12, 8) + (3,) * nd) < 0.5
        words = BF.pack_weight_bits(neg, 1)
        k = [3] * nd
        args = (x, words, torch.rand(12) + 0.5, torch.randn(12), torch.randn(8), 12, k, [2] * nd, [1] * nd,
                [1] * nd, 1)
        torch.library.opcheck(torch.ops.bnn.binary_conv.default, args)
        out = torch.ops.bnn.binary_conv(*args)
        ref = BF.binary_conv_torch(*args)
        assert torch.equal(out, ref)


@pytest.mark.skipif(not kernel_available(), reason="native kernel not built")
def test_kernel_constants_follow_in_place_weight_changes():
    """binary_conv (and the custom op) keep the kernel's layer constants per weight tensor and version."""
    x = torch.randn(1, 64, 5, 5)
    words = BF.pack_weight_bits(torch.rand(32, 64, 3, 3) < 0.5)
    other = BF.pack_weight_bits(torch.rand(32, 64, 3, 3) < 0.5)
    mul = torch.rand(32) + 0.5
    args = (None, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    first = BF.binary_conv(x, words, mul, None, *args)
    assert torch.equal(BF.binary_conv(x, words, mul, None, *args), first)
    words.copy_(other)  # same tensor, new contents
    expected = BF.binary_conv(x, other, mul, None, *args, use_native=False)
    assert torch.equal(BF.binary_conv(x, words, mul, None, *args), expected)
    assert torch.equal(torch.ops.bnn.binary_conv(x, words, mul, None, None, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
                       expected)


@pytest.mark.skipif(not kernel_available(), reason="native kernel not built")
def test_compiled_and_exported_models_reuse_the_layer_constants(monkeypatch):
    """The custom op (torch.compile, torch.export) takes each layer's constants made once, not on every call."""
    from bnn.deploy import kernel as K

    made = []
    real = K.conv_constants
    monkeypatch.setattr(K, "conv_constants", lambda *a, **k: made.append(1) or real(*a, **k))
    _, packed = _tiny()
    x = torch.randn(2, 3, 8, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = packed(x)
        assert len(made) == 3  # one per packed layer at this input shape
        compiled = torch.compile(packed, fullgraph=True, backend="aot_eager")
        exported = torch.export.export(packed, (x,)).module()
        for _ in range(3):
            assert torch.equal(compiled(x), eager)
            assert torch.equal(exported(x), eager)
    torch._dynamo.reset()
    assert len(made) == 3


def test_packed_real_shortcuts_compile_and_export_to_the_same_outputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
    fake = bnn.prepare_binary_model(model, bnn.presets.relu_friendly(), ignore_layers_name=["_first_"])
    with torch.no_grad():
        fake.train()(torch.randn(8, 3, 9, 9))
    fake.eval()
    packed = pack_binary_model(fake)
    assert [type(packed[i].post_process) for i in (3, 6)] == [bnn.ops.RealShortcut] * 2
    x = torch.randn(2, 3, 9, 9)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = packed(x)
        _close(eager, fake(x))
        assert torch.equal(torch.compile(packed, fullgraph=True, backend="aot_eager")(x), eager)
        torch.testing.assert_close(torch.export.export(packed, (x,)).module()(x), eager)
    torch._dynamo.reset()
