"""Presets, the binarizer name registry and the binarizers' sign-threshold declaration."""
import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops


@pytest.mark.parametrize("name", bnn.presets.preset_names())
def test_every_preset_prepares_and_learns_a_gradient(name):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1))
    model = bnn.prepare_binary_model(model, bnn.presets.get_preset(name), ignore_layers_name=["_first_"])
    assert isinstance(model[2], bnn.layers.Conv2d) and model[2].applied_bconfig is not None
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model[2].weight.grad.abs().sum() > 0


def test_preset_lookup_suggests_the_closest_name():
    with pytest.raises(KeyError, match="did you mean 'reactnet'"):
        bnn.presets.get_preset("reactnt")
    assert bnn.presets.get_preset("XNOR-Net").weight_pre_process is ops.XNORWeightBinarizer
    assert bnn.presets.nncf(mode="dorefa").weight_pre_process is ops.DoReFaWeightBinarizer


def test_registered_user_binarizer_is_found_by_name():
    @ops.register_binarizer("test_plain_sign")
    class PlainSign(ops.SignBinarizer):
        def forward(self, x):
            return torch.where(x < 0, -1.0, 1.0)

    assert ops.get_binarizer("test_plain_sign") is PlainSign
    assert ops.get_binarizer("xnorweightbinarizer") is ops.XNORWeightBinarizer
    ops.register_binarizer("test_plain_sign")(PlainSign)  # same class again: fine
    with pytest.raises(ValueError, match="already taken"):
        ops.register_binarizer("test_plain_sign")(ops.BasicInputBinarizer)
    with pytest.raises(KeyError, match="did you mean 'BasicInputBinarizer'"):
        ops.get_binarizer("BasicInputBinarizr")


def test_user_subclass_of_a_sign_binarizer_is_packed_as_binary_input():
    class MySign(ops.BasicInputBinarizer):
        pass

    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))
    model = bnn.prepare_binary_model(model, bnn.BConfig(activation_pre_process=MySign,
                                                        weight_pre_process=ops.XNORWeightBinarizer)).eval()
    packed = bnn.pack_binary_model(model)
    assert packed[0].binary_input
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), atol=1e-4, rtol=1e-4)
    assert bnn.summary(model, (4, 6, 6), print_fn=None).layers[0].binary_input


def test_sign_threshold_declarations():
    conv = nn.Conv2d(3, 4, 1)
    assert float(ops.BasicInputBinarizer().sign_threshold()) == 0.0
    rsign = ops.InputBiasBinarizer(conv)
    with torch.no_grad():
        rsign.bias.copy_(torch.tensor([0.5, -1.0, 0.0]).reshape(1, 3, 1, 1))
    assert rsign.sign_threshold().tolist() == [-0.5, 1.0, 0.0]
    assert ops.ScaleThresholdBinarizer(conv).sign_threshold() is None
    assert ops.KBitActivationQuantizer().sign_threshold() is None
    off = ops.ApproxSignBinarizer()
    off.enabled = False
    assert off.sign_threshold() is None
