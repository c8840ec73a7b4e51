"""from_nncf_config: NNCF's binarization algorithm config, verbatim from its docs, on torchvision's ResNet-18."""
import json

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import NNCFSchedule, from_nncf_config
from bnn.layers import BinaryLayerMixin
from bnn.nncf_config import scope_to_module_name
from bnn.ops import DoReFaWeightBinarizer, ScaleThresholdBinarizer, XNORWeightBinarizer

SEED_000_JSON = """{
    "algorithm": "binarization",
    "mode": "xnor", // Selects the mode of binarization - either 'xnor' for XNOR binarization, or 'dorefa' for DoReFa binarization
    "params": {
        "batch_multiplier": 1,  // Gradients will be accumulated for this number of batches before doing a 'backward' call
        "activations_bin_start_epoch": 10,  // Epoch to start binarizing activations
        "weights_bin_start_epoch": 30,  // Epoch to start binarizing weights
        "lr_poly_drop_start_epoch": 60,  // Epoch to start dropping the learning rate
        "lr_poly_drop_duration_epochs": 30,  // Duration, in epochs, of the learning rate dropping process.
        "disable_wd_start_epoch": 60  // Epoch to disable weight decay in the optimizer
    },

    //A list of model control flow graph node scopes to be ignored for this operation - functions as a 'blacklist'. Optional.
    "ignored_scopes": ["ResNet/Linear[fc]",
                       "ResNet/Conv2d[conv1]",
                       "ResNet/Sequential[layer2]/BasicBlock[0]/Sequential[downsample]",
                       "ResNet/Sequential[layer3]/BasicBlock[0]/Sequential[downsample]",
                       "ResNet/Sequential[layer4]/BasicBlock[0]/Sequential[downsample]"],

    // A list of model control flow graph node scopes to be considered for this operation - functions as a 'whitelist'. Optional.
    // "target_scopes": [],
}
"""

DOWNSAMPLES = {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"}


def resnet18():
    from torchvision.models import resnet18 as tv_resnet18

    return tv_resnet18(weights=None, num_classes=10)


def conv_names(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def binarized(model):
    return {name for name, m in model.named_modules() if isinstance(m, BinaryLayerMixin)}


@pytest.fixture(scope="module")
def seed_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("nncf") / "binarization.json"
    path.write_text(SEED_000_JSON)
    return path


def test_seed_000_json_with_comments(seed_json):
    model = resnet18()
    expected = set(conv_names(model)) - {"conv1"} - DOWNSAMPLES
    prepared, schedule = from_nncf_config(model, seed_json)
    assert schedule == NNCFSchedule(
        activations_bin_start_epoch=10,
        weights_bin_start_epoch=30,
        lr_poly_drop_start_epoch=60,
        lr_poly_drop_duration_epochs=30,
        disable_wd_start_epoch=60,
        batch_multiplier=1,
    )
    assert binarized(prepared) == expected and len(expected) == 16
    assert type(prepared.conv1) is nn.Conv2d and type(prepared.fc) is nn.Linear
    for name in DOWNSAMPLES:
        assert type(prepared.get_submodule(name)) is nn.Conv2d
    layer = prepared.layer1[0].conv1
    assert isinstance(layer.activation_pre_process, ScaleThresholdBinarizer)
    assert isinstance(layer.weight_pre_process, XNORWeightBinarizer)
    assert isinstance(layer.activation_post_process, nn.Identity)
    assert layer.activation_pre_process.threshold_param.shape == (1, 64, 1, 1)
    prepared.train()
    out = prepared(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert bool(layer.activation_pre_process.scale_initialized)
    assert layer.activation_pre_process.scale_param.grad is not None


def test_dict_dorefa_quant_spelling_and_yaml(tmp_path):
    cfg = json.loads(bnn.nncf_config._strip_json_comments(SEED_000_JSON))
    assert cfg["mode"] == "xnor"
    cfg["mode"] = "dorefa"
    cfg["params"] = {"activations_quant_start_epoch": 2, "weights_quant_start_epoch": 5}
    prepared, schedule = from_nncf_config(resnet18(), cfg)
    assert schedule.activations_bin_start_epoch == 2 and schedule.weights_bin_start_epoch == 5
    assert isinstance(prepared.layer1[0].conv1.weight_pre_process, DoReFaWeightBinarizer)
    import yaml

    path = tmp_path / "bin.yaml"
    path.write_text(yaml.safe_dump({"compression": [{"algorithm": "binarization", "mode": "dorefa",
                                                     "params": {"weights_bin_start_epoch": 7}}]}))
    prepared, schedule = from_nncf_config(resnet18(), path)
    assert schedule.weights_bin_start_epoch == 7
    assert binarized(prepared) == set(conv_names(prepared))  # no ignored scopes: every Conv2d


def test_target_scopes_allowlist_and_ignored_inside():
    cfg = {
        "algorithm": "binarization",
        "target_scopes": ["ResNet/Sequential[layer2]"],
        "ignored_scopes": ["ResNet/Sequential[layer2]/BasicBlock[0]/Sequential[downsample]"],
    }
    prepared, _ = from_nncf_config(resnet18(), cfg)
    assert binarized(prepared) == {"layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2"}


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 3, 1)
        self.c2 = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 3)


def test_only_conv2d_is_binarized():
    prepared, _ = from_nncf_config(Mixed(), {"algorithm": "binarization", "mode": "xnor"})
    assert binarized(prepared) == {"c2"}
    assert type(prepared.c1) is nn.Conv1d and type(prepared.fc) is nn.Linear


def test_scope_strings_to_module_names():
    assert scope_to_module_name("ResNet/Sequential[layer2]/BasicBlock[0]/Sequential[downsample]") == "layer2.0.downsample"
    assert scope_to_module_name("ResNet/Conv2d[conv1]") == "conv1"


def test_bad_keys_and_scopes_are_errors():
    with pytest.raises(ValueError, match=r"unknown key 'ignored_scope'.*'ignored_scopes'"):
        from_nncf_config(resnet18(), {"algorithm": "binarization", "ignored_scope": []})
    with pytest.raises(ValueError, match=r"unknown params key 'weights_bin_start'.*weights_bin_start_epoch"):
        from_nncf_config(resnet18(), {"params": {"weights_bin_start": 3}})
    with pytest.raises(ValueError, match=r"mode"):
        from_nncf_config(resnet18(), {"mode": "ternary"})
    with pytest.raises(ValueError, match=r"ResNet/Sequential\[layer5\].*layer5"):
        from_nncf_config(resnet18(), {"ignored_scopes": ["ResNet/Sequential[layer5]"]})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        from_nncf_config(resnet18(), "nope.json")
