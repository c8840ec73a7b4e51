"""bnn.models: shapes, structure, parameter counts, RPReLU math, and binarization with float_layer_names."""
import pytest
import torch
import torch.nn as nn

import bnn.models as M
from bnn.models.common import RPReLU
from bnn.models.resnet import BLOCK_ALIASES, DoubleSkipBlock


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors gain nothing from threads


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet_float_matches_torchvision_count_and_outputs():
    tv = pytest.importorskip("torchvision")
    m = M.resnet18()  # the original binary-networks-pytorch call: basic block, ImageNet stem, ReLU
    ref = tv.models.resnet18()
    assert _n_params(m) == _n_params(ref) == 11_689_512
    with torch.device("meta"):  # counting only: no memory, no init cost
        assert _n_params(M.resnet34()) == _n_params(tv.models.resnet34()) == 21_797_672
    # same structure: torchvision weights load and give the same logits
    m.load_torchvision_state_dict(ref.state_dict())
    m.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


@pytest.mark.parametrize("block", ["basic", "bn_first", "bireal", "preact"])
@pytest.mark.parametrize("fp_downsample", [False, True])
def test_resnet_blocks_forward_and_backward(block, fp_downsample):
    for stem, act, size in (("cifar", "prelu", 16), ("imagenet", "rprelu", 32)):
        m = M.resnet18(num_classes=5, block=block, fp_downsample=fp_downsample, stem=stem,
                       activation=act, width=4)
        x = torch.randn(2, 3, size, size)
        out = m(x)
        assert out.shape == (2, 5)
        out.sum().backward()
        assert m.first_conv.weight.grad is not None and m.fc.weight.grad.abs().sum() > 0


def test_resnet_stems_and_spatial_sizes():
    seen = {}
    for stem in ("imagenet", "cifar"):
        m = M.resnet18(num_classes=3, stem=stem, width=4).eval()
        h = m.layer1.register_forward_hook(lambda mod, i, o, s=stem: seen.__setitem__(s, o.shape[-1]))
        m(torch.randn(1, 3, 32, 32))
        h.remove()
    assert seen == {"imagenet": 8, "cifar": 32}
    assert M.resnet18(stem="imagenet").first_conv.kernel_size == (7, 7)
    assert isinstance(M.resnet18(stem="imagenet").maxpool, nn.MaxPool2d)
    c = M.resnet18(stem="cifar", width=4)
    assert c.first_conv.kernel_size == (3, 3) and c.first_conv.stride == (1, 1)
    assert isinstance(c.maxpool, nn.Identity)


def test_resnet34_stage_depths():
    m = M.resnet34(num_classes=2, width=4, stem="cifar").eval()
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 2)


def test_downsample_variants():
    plain = M.resnet18(width=4).layer2[0].downsample
    assert isinstance(plain[0], nn.Conv2d) and plain[0].stride == (2, 2) and plain[0].kernel_size == (1, 1)
    fp = M.resnet18(width=4, fp_downsample=True).layer2[0].downsample
    assert isinstance(fp[0], nn.AvgPool2d) and fp[0].kernel_size == 2
    assert isinstance(fp[1], nn.Conv2d) and fp[1].stride == (1, 1) and fp[1].kernel_size == (1, 1)
    assert isinstance(fp[2], nn.BatchNorm2d)


@pytest.mark.parametrize("block", ["bn_first", "bireal"])
def test_double_skip_has_a_shortcut_around_every_conv(block):
    # zero both convs: each sub-block reduces to act(shortcut); with identity
    # activation and identity shortcuts the block must return its input
    m = M.resnet18(block=block, activation="identity", width=4)
    blk = m.layer1[0]
    assert isinstance(blk, DoubleSkipBlock) and blk.downsample is None
    nn.init.zeros_(blk.conv1.weight), nn.init.zeros_(blk.conv2.weight)
    blk.eval()
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(blk(x), x)
    # the basic block has only one shortcut: zero conv1 and the output is not x
    b = M.resnet18(activation="identity", width=4).layer1[0].eval()
    nn.init.zeros_(b.conv1.weight)
    nn.init.ones_(b.bn2.bias)
    torch.testing.assert_close(b(x), x + 1)


def test_bn_first_bn_before_conv_bireal_bn_after():
    s = M.resnet18(block="bn_first", width=4).layer2[0]
    b = M.resnet18(block="bireal", width=4).layer2[0]
    assert s.bn1.num_features == 4 and s.conv1.in_channels == 4  # BN on the block input
    assert b.bn1.num_features == 8 and b.conv1.out_channels == 8  # BN on the conv output
    assert isinstance(s.act1, nn.PReLU) and isinstance(b.act2, nn.PReLU)  # default activation PReLU


def test_old_block_name_is_an_alias():
    torch.manual_seed(0)
    old = M.resnet18(block="seed003", width=4, num_classes=3).eval()
    torch.manual_seed(0)
    new = M.resnet18(block="bn_first", width=4, num_classes=3).eval()
    assert old.block_type == "bn_first" and BLOCK_ALIASES == {"seed003": "bn_first"}
    assert old.state_dict().keys() == new.state_dict().keys()
    assert isinstance(old.layer1[0].act1, nn.PReLU)  # the block's default activation, not basic's ReLU
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(old(x), new(x))
    assert M.get_model("resnet18", block="seed003", width=4).block_type == "bn_first"


def test_preact_block_order():
    m = M.resnet18(block="preact", activation="prelu", width=4, num_classes=3).eval()
    blk = m.layer2[0]
    calls = []
    for name in ("bn1", "act1", "conv1", "bn2", "act2", "conv2"):
        getattr(blk, name).register_forward_hook(lambda *a, n=name: calls.append(n))
    m(torch.randn(1, 3, 32, 32))
    assert calls == ["bn1", "act1", "conv1", "bn2", "act2", "conv2"]
    assert isinstance(m.final_bn, nn.BatchNorm2d)


def test_activation_options():
    m = M.resnet18(num_classes=10, rprelu=True, width=4)
    acts = [type(x) for x in m.modules() if isinstance(x, (nn.ReLU, nn.PReLU, RPReLU))]
    assert acts and set(acts) == {RPReLU}
    m = M.resnet18(num_classes=10, activation="prelu", width=4)
    assert {type(x) for x in m.modules() if isinstance(x, (nn.ReLU, nn.PReLU, RPReLU))} == {nn.PReLU}
    assert not any(isinstance(x, (nn.PReLU, RPReLU)) for x in M.resnet18(width=4).modules())
    with pytest.raises(ValueError, match="conflicts"):
        M.resnet18(rprelu=True, activation="relu")
    with pytest.raises(ValueError, match="did you mean 'prelu'"):
        M.resnet18(activation="prelus")
    with pytest.raises(ValueError, match="did you mean 'bireal'"):
        M.resnet18(block="birael")


def test_rprelu_math_and_gradients():
    act = RPReLU(3)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(act(x), nn.PReLU(3, 0.25)(x))  # shifts start at 0
    with torch.no_grad():
        act.shift_in.copy_(torch.tensor([0.5, -0.2, 0.0]))
        act.slope.copy_(torch.tensor([0.1, 0.5, -1.0]))
        act.shift_out.copy_(torch.tensor([1.0, 0.0, -0.3]))
    g = act.shift_in.view(1, 3, 1, 1)
    b = act.slope.view(1, 3, 1, 1)
    z = act.shift_out.view(1, 3, 1, 1)
    expected = torch.where(x - g >= 0, x - g + z, b * (x - g) + z)
    torch.testing.assert_close(act(x), expected)
    # hand-picked values: channel 0, x = 0 -> 0.1 * (0 - 0.5) + 1 = 0.95; x = 2 -> 2.5
    probe = torch.zeros(2, 3)
    probe[1, 0] = 2.0
    out = act(probe)
    assert out[0, 0].item() == pytest.approx(0.95) and out[1, 0].item() == pytest.approx(2.5)
    act(x).sum().backward()
    for p in (act.shift_in, act.slope, act.shift_out):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert act.shift_out.grad[0].item() == pytest.approx(x[:, 0].numel())  # d/dzeta = 1 everywhere


def test_reactnet_a_structure_and_forward():
    m = M.reactnet_a(num_classes=10, width_mult=0.125)
    assert len(m.blocks) == 13
    assert m.channels[0] == 4 and m.channels[-1] == 128
    assert [b.stride for b in m.blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    seen = []
    m.blocks.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert seen[0] == (2, 128, 2, 2)  # total stride 32
    c = M.reactnet_a(num_classes=4, width_mult=0.125, stem="cifar").eval()
    assert c(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert all(isinstance(x, RPReLU) for x in (m.blocks[0].act1, m.blocks[0].act2))
    # a channel-doubling block runs two 1x1 convs whose outputs are concatenated
    assert hasattr(m.blocks[1], "conv1x1_a") and not hasattr(m.blocks[2], "conv1x1_a")


def test_vgg_small_structure_and_count():
    m = M.vgg_small(num_classes=10)
    convs = [m.first_conv] + [getattr(m, f"conv{i}") for i in range(1, 6)]
    assert [c.out_channels for c in convs] == [128, 128, 256, 256, 512, 512]
    conv_params = 9 * (3 * 128 + 128 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512)
    bn_params = 2 * (2 * 128 + 2 * 256 + 2 * 512)
    fc_params = 512 * 4 * 4 * 10 + 10
    assert _n_params(m) == conv_params + bn_params + fc_params == 4_660_106
    small = M.vgg_small(num_classes=10, width_mult=0.0625)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    mnist = M.vgg_small(num_classes=10, width_mult=0.0625, in_channels=1, input_size=28)
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10) and mnist.fc.in_features == 32 * 9
    any_size = M.vgg_small(num_classes=10, width_mult=0.0625, in_channels=1)
    assert any_size(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_registry():
    assert M.list_models() == ["reactnet_a", "resnet18", "resnet34", "vgg_small"]
    small = {"resnet18": dict(width=4), "resnet34": dict(width=4), "reactnet_a": dict(width_mult=0.125),
             "vgg_small": dict(width_mult=0.0625)}
    for name in M.list_models():
        m = M.get_model(name, num_classes=7, **small[name]).eval()
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match=r"^unknown model 'resnet81' \(did you mean 'resnet18'\?\)$"):
        M.get_model("resnet81")
    with pytest.raises(ValueError, match=r"^unknown model 'zzz' \(valid: reactnet_a, resnet18, resnet34, vgg_small\)$"):
        M.get_model("zzz")
    assert "stem" in M.model_options("resnet18") and "width_mult" in M.model_options("reactnet_a")
    with pytest.raises(ValueError, match=r"^unknown option 'blok' for model 'resnet18' \(did you mean 'block'\?\)$"):
        M.get_model("resnet18", blok="bireal")


def test_float_layer_names():
    m = M.resnet18(width=4)
    assert m.float_layer_names() == M.float_layer_names(m) == [
        "first_conv", "fc", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert M.float_layer_names(m, downsample=False) == ["first_conv", "fc"]
    fp = M.resnet18(width=4, fp_downsample=True)
    assert M.float_layer_names(fp)[2:] == ["layer2.0.downsample.1", "layer3.0.downsample.1", "layer4.0.downsample.1"]
    assert M.float_layer_names(M.reactnet_a(width_mult=0.125)) == ["first_conv", "fc"]
    assert M.float_layer_names(M.vgg_small(width_mult=0.0625)) == ["first_conv", "fc"]
    # fallback for foreign models (torchvision naming)
    tv = pytest.importorskip("torchvision")
    assert M.float_layer_names(tv.models.resnet18()) == [
        "conv1", "fc", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]


def _binary_bconfig():
    bnn = pytest.importorskip("bnn")
    from bnn.ops import BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer
    return bnn, bnn.BConfig(activation_pre_process=BasicInputBinarizer,
                            activation_post_process=BasicScaleBinarizer,
                            weight_pre_process=XNORWeightBinarizer)


@pytest.mark.parametrize("name,kw", [
    ("resnet18", dict(width=4, stem="cifar", block="bireal", fp_downsample=True, rprelu=True)),
    ("resnet18", dict(width=4)),
    ("reactnet_a", dict(width_mult=0.125, stem="cifar")),
    ("vgg_small", dict(width_mult=0.0625)),
])
def test_prepare_binary_model_keeps_exactly_the_float_layers(name, kw):
    bnn, bconfig = _binary_bconfig()
    from bnn.layers import BinaryLayerMixin
    model = M.get_model(name, num_classes=6, **kw)
    keep = M.float_layer_names(model)
    bmodel = bnn.prepare_binary_model(model, bconfig, ignore_layers_name=keep)
    types = {n: type(mod) for n, mod in bmodel.named_modules()}
    for n in keep:
        assert types[n] in (nn.Conv2d, nn.Linear), n
    binary = [n for n, mod in bmodel.named_modules() if isinstance(mod, BinaryLayerMixin)]
    weighted = [n for n, mod in bmodel.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert binary and sorted(binary) == sorted(set(weighted) - set(keep))
    out = bmodel(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 6) and torch.isfinite(out).all()


def test_original_toolkit_readme_call():
    bnn, _ = _binary_bconfig()
    from bnn.ops import BasicScaleBinarizer, InputBiasBinarizer, XNORWeightBinarizer
    model = M.resnet18(num_classes=1000, rprelu=False)
    bconfig = bnn.BConfig(activation_pre_process=InputBiasBinarizer,
                          activation_post_process=BasicScaleBinarizer,
                          weight_pre_process=XNORWeightBinarizer.with_args(compute_alpha=False,
                                                                           center_weights=True))
    model = bnn.prepare_binary_model(model, bconfig, custom_config_layers_name={"first_conv": bnn.BConfig()})
    first = model.first_conv  # kept float: a plain conv, or a binary layer with identity binarizers
    assert type(first) is nn.Conv2d or isinstance(first.activation_pre_process, nn.Identity)
    assert isinstance(model.layer1[0].conv1.activation_pre_process, InputBiasBinarizer)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
