"""Five torchvision architectures (random init, nothing downloaded), binarized with the first and last
Conv2d/Linear kept float: exactly the intended layers are swapped, forward and backward run, and every
latent weight and binarizer parameter gets a finite gradient."""
import pytest
import torch
import torch.nn as nn

from bnn import BConfig, prepare_binary_model
from bnn.layers import BinaryLayerMixin
from bnn.ops import BasicScaleBinarizer, InputBiasBinarizer, XNORWeightBinarizer

BCONFIG = BConfig(
    activation_pre_process=InputBiasBinarizer,
    activation_post_process=BasicScaleBinarizer,
    weight_pre_process=XNORWeightBinarizer.with_args(center_weights=True),
)
PROCESSES = ("activation_pre_process", "weight_pre_process", "activation_post_process")


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "vgg11_bn", "densenet121", "efficientnet_b0"])
def test_torchvision_model_binarizes_and_trains(arch):
    torchvision = pytest.importorskip("torchvision")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    swappable = [name for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    latent = {name: model.get_submodule(name).weight for name in swappable}
    intended = set(swappable[1:-1])

    model = prepare_binary_model(model, BCONFIG, ignore_layers_name=["_first_", "_last_"]).train()
    # BatchNorm uses its running statistics: with random weights, sign() of a ReLU output is +1 everywhere,
    # so a binary conv's output is nearly constant over the tiny late feature maps of a 64x64 input, the
    # batch variance collapses to ~0 and each BatchNorm multiplies the gradient by up to 1/sqrt(eps):
    # float32 overflows after a few dozen layers. That is random init, not bnn; the binarizers stay in training mode.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()

    binarized = {name for name, m in model.named_modules() if isinstance(m, BinaryLayerMixin)}
    assert binarized == intended
    for name in (swappable[0], swappable[-1]):
        assert type(model.get_submodule(name)) in (nn.Conv2d, nn.Linear)
    for name in intended:
        layer = model.get_submodule(name)
        assert layer.weight is latent[name]  # the very same Parameter
        assert isinstance(layer.activation_pre_process, InputBiasBinarizer)

    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.logsumexp(dim=1).sum().backward()

    for name in intended:
        layer = model.get_submodule(name)
        tensors = {"weight": layer.weight}
        for process in PROCESSES:
            for pname, p in getattr(layer, process).named_parameters():
                tensors[f"{process}.{pname}"] = p
        assert len(tensors) == 3
        for key, p in tensors.items():
            assert p.grad is not None, f"{arch}: {name}.{key} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{arch}: {name}.{key} has a non-finite gradient"
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
