"""BConfig and factories: validation, pickling, repr, and both custom-binarizer styles of the seed README."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnn
from bnn import BConfig, prepare_binary_model
from bnn.config import Factory, build_process, with_args
from bnn.ops import BasicInputBinarizer, BasicScaleBinarizer, InputBiasBinarizer, XNORWeightBinarizer


def full_config():
    return BConfig(
        activation_pre_process=BasicInputBinarizer,
        activation_post_process=BasicScaleBinarizer,
        weight_pre_process=XNORWeightBinarizer.with_args(center_weights=True),
    )


def test_default_bconfig_is_float_and_fields():
    assert BConfig().is_float
    assert BConfig(weight_pre_process=nn.Identity).is_float
    assert BConfig(activation_pre_process=Factory(nn.Identity)).is_float
    cfg = full_config()
    assert not cfg.is_float
    assert cfg.activation_pre_process is BasicInputBinarizer
    assert cfg.activation_post_process is BasicScaleBinarizer
    assert cfg.weight_pre_process == XNORWeightBinarizer.with_args(center_weights=True)


@pytest.mark.parametrize("field", ["activation_pre_process", "activation_post_process", "weight_pre_process"])
def test_instance_instead_of_factory_is_value_error(field):
    with pytest.raises(ValueError, match=rf"{field}.*instance of XNORWeightBinarizer.*with_args"):
        BConfig(**{field: XNORWeightBinarizer()})


def test_non_callable_is_value_error():
    with pytest.raises(ValueError, match="weight_pre_process"):
        BConfig(weight_pre_process=3)


def test_with_args_builds_configured_instance_and_merges():
    factory = XNORWeightBinarizer.with_args(center_weights=True)
    assert isinstance(factory, Factory)
    module = factory()
    assert isinstance(module, XNORWeightBinarizer) and module.center_weights and module.compute_alpha
    merged = factory.with_args(compute_alpha=False)
    m2 = merged()
    assert m2.center_weights and not m2.compute_alpha
    assert with_args(nn.Dropout, p=0.3)().p == 0.3


def test_pickle_deepcopy_and_repr_of_configs_and_factories():
    cfg = full_config()
    for clone in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert isinstance(clone, BConfig)
        assert clone == cfg
        assert clone.weight_pre_process == cfg.weight_pre_process
        assert isinstance(clone.weight_pre_process(), XNORWeightBinarizer)
    factory = XNORWeightBinarizer.with_args(center_weights=True)
    assert pickle.loads(pickle.dumps(factory)) == factory
    assert copy.deepcopy(factory) == factory
    assert repr(factory) == "XNORWeightBinarizer.with_args(center_weights=True)"
    text = repr(cfg)
    assert text == (
        "BConfig(activation_pre_process=BasicInputBinarizer, activation_post_process=BasicScaleBinarizer, "
        "weight_pre_process=XNORWeightBinarizer.with_args(center_weights=True))"
    )
    assert "None" in repr(BConfig())


def test_build_process_passes_layer_only_to_factories_that_want_it():
    layer = nn.Conv2d(3, 5, 3)
    scale = build_process(BasicScaleBinarizer, layer)  # __init__(self, module)
    assert scale.scale.shape == (5,)
    rsign = build_process(InputBiasBinarizer, layer)
    assert rsign.bias.shape == (1, 3, 1, 1)
    assert isinstance(build_process(BasicInputBinarizer, layer), BasicInputBinarizer)  # no-arg __init__
    assert isinstance(build_process(None, layer), nn.Identity)
    assert isinstance(build_process(nn.Identity, layer), nn.Identity)
    with pytest.raises(TypeError, match="expected an nn.Module"):
        build_process(lambda: 3, layer)


# ---- The seed README's custom binarizers, verbatim -------------------------------------------------------------

class CustomOutputBinarizer(nn.Module):
    def __init__(self):
        super(CustomOutputBinarizer, self).__init__()
    def forward(self, x_after, x_before):
        # scale binarizer takes a list of input containg [conv_output and conv_input]
        return F.normalize(x_after, p=2) # operate on the conv_output

class CustomInputBinarizer(nn.Module):
    def __init__(self):
        super(CustomInputBinarizer, self).__init__()
    def forward(self, x):
        # dummy example of using sign instead of tanh
        return torch.tanh(x) # operate on the conv_output


def test_seed_readme_custom_binarizers_no_arg_init():
    bconfig = BConfig(
        activation_pre_process = CustomInputBinarizer,
        activation_post_process = CustomOutputBinarizer,
        weight_pre_process = nn.Identity # this will keep the weights real
    )
    float_conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    expected = F.normalize(float_conv(torch.tanh(x)), p=2)
    conv = prepare_binary_model(float_conv, bconfig)
    assert isinstance(conv, bnn.layers.Conv2d)
    assert isinstance(conv.activation_pre_process, CustomInputBinarizer)
    assert isinstance(conv.activation_post_process, CustomOutputBinarizer)
    torch.testing.assert_close(conv(x), expected)


class ModuleArgBinarizer(nn.Module):
    """The second style: the factory receives the layer being built."""

    def __init__(self, module):
        super().__init__()
        self.gain = nn.Parameter(torch.full((module.out_channels, 1, 1), 2.0))

    def forward(self, x_after, x_before):
        return x_after * self.gain + x_before.mean()


def test_custom_binarizer_taking_the_module():
    float_conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    expected = float_conv(x) * 2.0 + x.mean()
    conv = prepare_binary_model(float_conv, BConfig(activation_post_process=ModuleArgBinarizer))
    assert conv.activation_post_process.gain.shape == (4, 1, 1)
    torch.testing.assert_close(conv(x), expected)
    assert "activation_post_process.gain" in conv.state_dict()
    assert any(p is conv.activation_post_process.gain for p in conv.parameters())


class SeedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.first_conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(self.first_conv(x))
        return self.fc(x.mean(dim=(2, 3)))


def test_seed_readme_prepare_example_runs():
    # the seed's first example, with the dict syntax corrected and a tiny model in place of resnet18
    model = SeedNet()
    bconfig = BConfig(
        activation_pre_process=InputBiasBinarizer, # corresponds to RSign from ReActNet
        activation_post_process=BasicScaleBinarizer,
        weight_pre_process=XNORWeightBinarizer.with_args(compute_alpha=False,
                                                         center_weights=True),
    )
    model = prepare_binary_model(
        model,
        bconfig,
        custom_config_layers_name={
            "first_conv": BConfig(),
        },
    )
    assert type(model.first_conv) is nn.Conv2d
    assert isinstance(model.conv, bnn.layers.Conv2d) and isinstance(model.fc, bnn.layers.Linear)
    assert model.fc.activation_pre_process.bias.shape == (4,)
    out = model(torch.randn(2, 3, 6, 6))
    out.sum().backward()
    assert out.shape == (2, 3)
    assert model.conv.activation_pre_process.bias.grad is not None
