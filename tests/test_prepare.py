"""prepare_binary_model / convert: propagation, precedence, errors, state dicts, pickling, torch.compile."""
import copy
import re

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import BConfig, convert, prepare_binary_model, set_binarization
from bnn.layers import BinaryLayerMixin
from bnn.ops import (
    ApproxSignBinarizer,
    BasicInputBinarizer,
    BasicScaleBinarizer,
    Binarizer,
    InputBiasBinarizer,
    ScaleThresholdBinarizer,
    SwishSignBinarizer,
    XNORWeightBinarizer,
)
from conftest import make_tiny_net

G = BConfig(BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer)  # global
A = BConfig(activation_pre_process=ApproxSignBinarizer)  # attribute
A2 = BConfig(activation_pre_process=ApproxSignBinarizer, weight_pre_process=XNORWeightBinarizer)
R = BConfig(activation_pre_process=SwishSignBinarizer)  # regex key
E = BConfig(activation_pre_process=InputBiasBinarizer)  # exact key
LAYERS = ["stem", "body.a", "body.b", "body.c", "head"]


def configs(model):
    return {name: (m.applied_bconfig if isinstance(m, BinaryLayerMixin) else "float") for name, m in model.named_modules() if name in LAYERS}


def test_global_config_swaps_exact_types_and_shares_parameters(tiny_net):
    params = {name: (m.weight, m.bias) for name, m in tiny_net.named_modules() if name in LAYERS}
    model = prepare_binary_model(tiny_net, G)
    assert model is tiny_net
    assert type(model.stem) is bnn.layers.Conv2d and type(model.head) is bnn.layers.Linear
    assert configs(model) == {name: G for name in LAYERS}
    for name, (w, b) in params.items():
        layer = model.get_submodule(name)
        assert layer.weight is w and layer.bias is b
        assert isinstance(layer, (nn.Conv2d, nn.Linear))  # subclasses of the torch layers
    assert isinstance(model.body.a.activation_pre_process, BasicInputBinarizer)
    assert isinstance(model.body.a.weight_pre_process, XNORWeightBinarizer)
    assert model.body.a.activation_post_process.scale.shape == (4,)
    ids = {id(p) for p in model.parameters()}
    assert id(model.body.a.activation_post_process.scale) in ids  # reaches the optimizer
    assert "body.a.activation_post_process.scale" in model.state_dict()
    out = model(torch.randn(2, 3, 6, 6))
    out.sum().backward()
    assert model.body.a.weight.grad is not None


def test_layer_computes_post_op_pre():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    layer = prepare_binary_model(copy.deepcopy(conv), G)
    with torch.no_grad():
        layer.activation_post_process.scale.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
    w = XNORWeightBinarizer()(conv.weight)
    expected = nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), w, conv.bias, padding=1)
    expected = expected * torch.tensor([1.0, 2.0, -1.0, 0.5]).view(1, 4, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.binarized_weight(), w)
    back = layer.to_float()
    assert type(back) is nn.Conv2d and back.weight is conv.weight or back.weight is layer.weight
    assert layer.applied_bconfig == G


def test_bare_layer_comes_back_swapped():
    for float_layer, cls in [(nn.Conv1d(2, 3, 3), bnn.layers.Conv1d), (nn.Conv2d(2, 3, 3), bnn.layers.Conv2d), (nn.Linear(2, 3), bnn.layers.Linear)]:
        weight = float_layer.weight
        layer = prepare_binary_model(float_layer, G)
        assert type(layer) is cls and layer.weight is weight


def test_precedence_global_attribute_regex_exact(tiny_net):
    tiny_net.stem.bconfig = A2  # own attribute
    tiny_net.body.bconfig = A  # inherited by a, b, c
    model = prepare_binary_model(
        tiny_net, G, custom_config_layers_name={r"$body\.[bc]$": R, "body.c": E}
    )
    assert configs(model) == {"stem": A2, "body.a": A, "body.b": R, "body.c": E, "head": G}


def test_precedence_deepest_attribute_and_parent_keys(tiny_net):
    tiny_net.body.bconfig = A
    tiny_net.body.a.bconfig = A2  # a descendant's own config beats its ancestor's
    model = prepare_binary_model(tiny_net, G)
    assert configs(model) == {"stem": G, "body.a": A2, "body.b": A, "body.c": A, "head": G}
    # a parent's exact name covers its subtree and beats a regex on a leaf
    model = prepare_binary_model(make_tiny_net(), G, custom_config_layers_name={"body": E, r"$body\.b$": R})
    assert configs(model) == {"stem": G, "body.a": E, "body.b": E, "body.c": E, "head": G}
    # a regex on a parent covers its subtree
    model = prepare_binary_model(make_tiny_net(), G, custom_config_layers_name={"$bo.y$": R})
    assert configs(model) == {"stem": G, "body.a": R, "body.b": R, "body.c": R, "head": G}


def test_ignore_beats_everything(tiny_net):
    tiny_net.body.b.bconfig = A
    model = prepare_binary_model(
        tiny_net,
        G,
        custom_config_layers_name={"body.c": E, r"$body\.a$": R},
        ignore_layers_name=["body.c", r"$body\.[ab]$"],
    )
    assert configs(model) == {"stem": G, "body.a": "float", "body.b": "float", "body.c": "float", "head": G}
    assert type(model.body.c) is nn.Conv2d
    # an ignored parent keeps its whole subtree float
    model = prepare_binary_model(make_tiny_net(), G, ignore_layers_name=["body"])
    assert configs(model) == {"stem": G, "body.a": "float", "body.b": "float", "body.c": "float", "head": G}


def test_bconfig_float_override_keeps_layer_float(tiny_net):
    model = prepare_binary_model(tiny_net, G, custom_config_layers_name={"stem": BConfig()})
    assert type(model.stem) is nn.Conv2d


def test_first_and_last_are_not_swapped(tiny_net):
    model = prepare_binary_model(tiny_net, G, ignore_layers_name=["_first_"])
    assert configs(model) == {"stem": "float", "body.a": G, "body.b": G, "body.c": G, "head": G}
    model = prepare_binary_model(make_tiny_net(), G, ignore_layers_name=["_last_"])
    assert configs(model) == {"stem": G, "body.a": G, "body.b": G, "body.c": G, "head": "float"}
    model = prepare_binary_model(make_tiny_net(), G, ignore_layers_name=["_first_", "_last_"])
    assert configs(model) == {"stem": "float", "body.a": G, "body.b": G, "body.c": G, "head": "float"}


def test_unknown_names_are_errors_with_suggestions(tiny_net):
    with pytest.raises(ValueError, match=r"custom_config_layers_name.*'body\.d'.*body\.[abc]"):
        prepare_binary_model(tiny_net, G, custom_config_layers_name={"body.d": E})
    with pytest.raises(ValueError, match=r"ignore_layers_name: no module named 'bdy' \(did you mean 'body'\?\)"):
        prepare_binary_model(tiny_net, G, ignore_layers_name=["bdy"])
    with pytest.raises(ValueError, match=re.escape("'$nothing.*here$'")):
        prepare_binary_model(tiny_net, G, custom_config_layers_name={"$nothing.*here$": E})
    with pytest.raises(ValueError, match=re.escape("'$zzz$'")):
        prepare_binary_model(tiny_net, G, ignore_layers_name=["$zzz$"])
    # nothing was swapped by the failed calls
    assert not any(isinstance(m, BinaryLayerMixin) for m in tiny_net.modules())


@pytest.mark.parametrize("argument", ["custom_config_layers_name", "ignore_layers_name"])
def test_invalid_regex_is_an_error_naming_it(tiny_net, argument):
    kwargs = {argument: {"$body[$": E}} if argument == "custom_config_layers_name" else {argument: ["$body[$"]}
    with pytest.raises(ValueError, match=rf"{argument}: invalid regex '\$body\[\$'"):
        prepare_binary_model(tiny_net, G, **kwargs)


@pytest.mark.parametrize("argument", ["custom_config_layers_name", "ignore_layers_name"])
@pytest.mark.parametrize("key", ["body.bn", r"$.*\.bn$", "pool"])
def test_entry_covering_no_swappable_layer_warns_naming_it(tiny_net, argument, key):
    kwargs = {argument: {key: E}} if argument == "custom_config_layers_name" else {argument: [key]}
    what = "AdaptiveAvgPool2d" if key == "pool" else "BatchNorm2d"
    with pytest.warns(UserWarning, match=rf"{argument}: {re.escape(repr(key))} matches .*\({what}\), which holds no "
                                         r"swappable layer \(Conv1d, Conv2d, Linear\); the entry has no effect"):
        model = prepare_binary_model(tiny_net, G, **kwargs)
    assert configs(model) == {name: G for name in LAYERS}  # and indeed nothing changed


def test_entries_covering_swappable_layers_do_not_warn(tiny_net, recwarn):
    prepare_binary_model(tiny_net, G, custom_config_layers_name={"body": E, r"$body\.[ab]$": R},
                         ignore_layers_name=["head", "_first_", r"$body\.c$"])
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_bconfig_attribute_of_wrong_type_is_a_one_line_error(tiny_net):
    tiny_net.body.bconfig = "xnor"
    with pytest.raises(TypeError, match=r"^module 'body' \(Sequential\) has a bconfig attribute of type str; "
                                        r"expected a bnn\.BConfig \(or None\)$"):
        prepare_binary_model(tiny_net, G)
    model = make_tiny_net()
    model.bconfig = {"activation_pre_process": BasicInputBinarizer}
    with pytest.raises(TypeError, match=r"^the model \(Sequential\) has a bconfig attribute of type dict"):
        convert(model)


def test_swapped_layers_keep_their_hooks(tiny_net):
    calls = []
    pre = tiny_net.body.a.register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    tiny_net.head.register_forward_hook(lambda m, args, kwargs, out: calls.append(("fwd", type(m))) or out + 100.0,
                                        with_kwargs=True)
    tiny_net.stem.register_full_backward_hook(lambda m, gin, gout: calls.append(("bwd", type(m))))
    model = prepare_binary_model(tiny_net, BConfig(weight_pre_process=XNORWeightBinarizer))
    assert type(model.body.a) is bnn.layers.Conv2d and type(model.head) is bnn.layers.Linear
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = model(x)
    # the pre-hook zeroed body.a's input: its output is its bias everywhere
    a_out = model.body.a(torch.randn(1, 4, 6, 6))
    torch.testing.assert_close(a_out, model.body.a.bias.view(1, 4, 1, 1).expand_as(a_out))
    expected = model.head(model.flat(model.pool(model.body[1:](model.body.a(model.stem(x))))))
    torch.testing.assert_close(out, expected)
    assert torch.all(out > 50)  # the forward hook (with kwargs) added 100
    out.sum().backward()
    assert ("fwd", bnn.layers.Linear) in calls and ("bwd", bnn.layers.Conv2d) in calls
    # the handles given at registration still remove the hooks from the swapped layer
    pre.remove()
    assert not model.body.a._forward_pre_hooks
    a_in = torch.randn(1, 4, 6, 6)
    assert not torch.allclose(model.body.a(a_in), model.body.a.bias.view(1, 4, 1, 1).expand(1, 4, 6, 6))
    # back to float (ignore) keeps them too, and so does a bare layer
    model = prepare_binary_model(model, None, ignore_layers_name=["head"])
    assert type(model.head) is nn.Linear and len(model.head._forward_hooks) == 1
    bare = nn.Linear(2, 2)
    bare.register_forward_hook(lambda m, args, out: out * 0.0)
    assert torch.all(prepare_binary_model(bare, G)(torch.randn(3, 2)) == 0.0)


def test_custom_config_must_be_a_dict(tiny_net):
    with pytest.raises(TypeError, match="dict"):
        prepare_binary_model(tiny_net, G, custom_config_layers_name=["stem"])


def _disable_all(model):
    for module in model.modules():
        if isinstance(module, Binarizer):
            module.enabled = False


def test_float_state_dict_loads_strict_and_outputs_match_when_disabled(tiny_net):
    bconfig = BConfig(InputBiasBinarizer, BasicScaleBinarizer, XNORWeightBinarizer.with_args(center_weights=True))
    model = prepare_binary_model(tiny_net, bconfig).eval()
    float_model = make_tiny_net().eval()  # other weights than the ones the prepared model started with
    with torch.no_grad():
        float_model.body.bn.running_mean.uniform_(-1, 1)
    result = model.load_state_dict(float_model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 6, 6)
    assert not torch.allclose(model(x), float_model(x))
    _disable_all(model)
    torch.testing.assert_close(model(x), float_model(x))
    # and the prepared model's own state dict round-trips (strict) into a fresh prepared model
    fresh = prepare_binary_model(make_tiny_net(), bconfig).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert not fresh.body.a.activation_pre_process.enabled
    torch.testing.assert_close(fresh(x), model(x))


def test_float64_model_keeps_dtype_and_device(tiny_net):
    bconfig = BConfig(InputBiasBinarizer, BasicScaleBinarizer, XNORWeightBinarizer)
    model = prepare_binary_model(tiny_net.double(), bconfig)
    for name, p in model.named_parameters():
        assert p.dtype == torch.float64 and p.device.type == "cpu", name
    assert model.stem.activation_pre_process.bias.dtype == torch.float64
    out = model(torch.randn(2, 3, 6, 6, dtype=torch.float64))
    assert out.dtype == torch.float64
    out.sum().backward()
    st = prepare_binary_model(nn.Conv2d(3, 2, 1).double(), BConfig(ScaleThresholdBinarizer))
    assert st.activation_pre_process.scale_param.dtype == torch.float64


def test_train_eval_mode_kept(tiny_net):
    tiny_net.eval()
    model = prepare_binary_model(tiny_net, G)
    assert not model.body.a.training and not model.body.a.activation_pre_process.training


def test_reprepare_keeps_learned_params_whose_shapes_match(tiny_net):
    step1 = BConfig(InputBiasBinarizer, BasicScaleBinarizer)
    model = prepare_binary_model(tiny_net, step1)
    with torch.no_grad():
        model.body.a.activation_pre_process.bias.fill_(0.25)
        model.body.a.activation_post_process.scale.fill_(3.0)
    weight = model.body.a.weight
    step2 = BConfig(InputBiasBinarizer, BasicScaleBinarizer, XNORWeightBinarizer)
    model = prepare_binary_model(model, step2)
    assert model.body.a.applied_bconfig == step2 and model.body.a.weight is weight
    assert torch.all(model.body.a.activation_pre_process.bias == 0.25)
    assert torch.all(model.body.a.activation_post_process.scale == 3.0)
    # re-preparing with ignore makes the layer float again, with its parameters
    model = prepare_binary_model(model, step2, ignore_layers_name=["body.a"])
    assert type(model.body.a) is nn.Conv2d and model.body.a.weight is weight


class SizedParam(Binarizer):
    def __init__(self, n=3):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(n))

    def forward(self, out, x):
        return out + self.p.sum()


def test_reprepare_skips_params_whose_shapes_differ(tiny_net):
    model = prepare_binary_model(tiny_net, BConfig(activation_post_process=SizedParam))
    with torch.no_grad():
        model.stem.activation_post_process.p.fill_(1.0)
    model = prepare_binary_model(model, BConfig(activation_post_process=SizedParam.with_args(n=4)))
    assert model.stem.activation_post_process.p.shape == (4,)
    assert torch.all(model.stem.activation_post_process.p == 0.0)
    model = prepare_binary_model(model, BConfig(activation_post_process=SizedParam.with_args(n=3)))
    assert torch.all(model.stem.activation_post_process.p == 0.0)


class Net(nn.Module):
    """bconfig attributes set at construction time (the original toolkit README's manual path)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))
        self.block.bconfig = G
        self.fc = nn.Linear(4, 2)
        self.fc.bconfig = A

    def forward(self, x):
        return self.fc(self.block(self.conv1(x)).mean(dim=(2, 3)))


def test_convert_swaps_modules_with_bconfig_attributes():
    model = convert(Net())
    assert type(model.conv1) is nn.Conv2d
    assert type(model.block[0]) is bnn.layers.Conv2d and model.block[0].applied_bconfig == G
    assert model.block[2].applied_bconfig == G
    assert model.fc.applied_bconfig == A
    model(torch.randn(1, 3, 5, 5)).sum().backward()


class MyConv(nn.Conv2d):
    pass


class MyBinaryConv(bnn.layers.Conv2d):
    _FLOAT_MODULE = MyConv


class MyBinaryLinear(bnn.layers.Linear):
    def forward(self, x):
        return super().forward(x) * 2.0


def test_modules_mapping_extends_and_overrides():
    model = nn.Sequential(MyConv(3, 4, 1), nn.Flatten(), nn.Linear(4 * 2 * 2, 2))
    # exact types only: a subclass of nn.Conv2d is not swapped by default
    prepared = prepare_binary_model(copy.deepcopy(model), G)
    assert type(prepared[0]) is MyConv and type(prepared[2]) is bnn.layers.Linear
    x = torch.randn(1, 3, 2, 2)
    prepared = prepare_binary_model(model, BConfig(), modules_mapping={MyConv: MyBinaryConv, nn.Linear: MyBinaryLinear})
    assert type(prepared[0]) is MyConv  # BConfig() keeps float
    expected = model(x)
    prepared = prepare_binary_model(model, BConfig(weight_pre_process=nn.Identity, activation_pre_process=nn.Identity,
                                                   activation_post_process=BasicScaleBinarizer),
                                    modules_mapping={MyConv: MyBinaryConv, nn.Linear: MyBinaryLinear})
    assert type(prepared[0]) is MyBinaryConv and type(prepared[2]) is MyBinaryLinear
    torch.testing.assert_close(prepared(x), expected * 2.0)
    assert type(prepared[0].to_float()) is MyConv
    with pytest.raises(TypeError, match="modules_mapping"):
        prepare_binary_model(nn.Sequential(nn.Conv2d(1, 1, 1)), G, modules_mapping={nn.Conv2d: nn.Conv2d})


def test_set_binarization_switches_kinds(tiny_net):
    model = prepare_binary_model(tiny_net, G, ignore_layers_name=["_first_"])
    assert set_binarization(model, activations=False) == 4
    for name in LAYERS[1:]:
        layer = model.get_submodule(name)
        assert not layer.activation_pre_process.enabled
        assert layer.weight_pre_process.enabled and layer.activation_post_process.enabled
    set_binarization(model, weights=False)
    assert not any(model.get_submodule(n).weight_pre_process.enabled for n in LAYERS[1:])
    assert not any(model.get_submodule(n).activation_pre_process.enabled for n in LAYERS[1:])
    assert set_binarization(model, activations=True, weights=None) == 4
    assert all(model.get_submodule(n).activation_pre_process.enabled for n in LAYERS[1:])
    assert not any(model.get_submodule(n).weight_pre_process.enabled for n in LAYERS[1:])
    assert set_binarization(model) == 0
    # the flags live in the state dict
    fresh = prepare_binary_model(make_tiny_net(), G, ignore_layers_name=["_first_"])
    fresh.load_state_dict(model.state_dict())
    assert not fresh.body.a.weight_pre_process.enabled and fresh.body.a.activation_pre_process.enabled


def test_torch_save_load_whole_prepared_model(tiny_net, tmp_path):
    bconfig = BConfig(InputBiasBinarizer, BasicScaleBinarizer, XNORWeightBinarizer.with_args(center_weights=True))
    model = prepare_binary_model(tiny_net, bconfig, ignore_layers_name=["_first_"]).eval()
    with torch.no_grad():
        model.body.a.activation_post_process.scale.uniform_(0.5, 2.0)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded.body.a.applied_bconfig == bconfig
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(copy.deepcopy(model)(x), model(x))


def test_prepared_model_trains_under_torch_compile():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch build")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1),
                          nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 16, 2))
    bconfig = BConfig(InputBiasBinarizer, BasicScaleBinarizer, XNORWeightBinarizer.with_args(center_weights=True))
    model = prepare_binary_model(model, bconfig, ignore_layers_name=["_first_"])
    compiled = torch.compile(model, backend="aot_eager")  # graph capture + AOT autograd, no C compiler needed
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 3, 4, 4), torch.randint(0, 2, (16,))
    weight0 = model[2].weight.detach().clone()
    bias0 = model[2].activation_pre_process.bias.detach().clone()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(model[2].weight, weight0)
    assert not torch.equal(model[2].activation_pre_process.bias, bias0)
    eager = nn.functional.cross_entropy(model(x), y).item()
    compiled_loss = nn.functional.cross_entropy(compiled(x), y).item()
    assert compiled_loss == pytest.approx(eager, rel=1e-4, abs=1e-5)
