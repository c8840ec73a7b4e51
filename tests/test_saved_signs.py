"""Binary layers keep +-1 activations and +-c weights as 1-byte masks for the backward: same gradients, less memory."""
import contextlib

import pytest
import torch
import torch.nn as nn

import bnn
import bnn.layers.binary_layer as binary_layer
from bnn import ops
from bnn.ops import functional as F

CONFIGS = {
    "xnor centred + scale": bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer,
                                       activation_post_process=ops.BasicScaleBinarizer,
                                       weight_pre_process=ops.XNORWeightBinarizer.with_args(center_weights=True)),
    "relu_friendly": bnn.presets.relu_friendly(),
    "dorefa + bias scale": bnn.BConfig(activation_pre_process=ops.ApproxSignBinarizer,
                                      activation_post_process=ops.BiasScaleBinarizer,
                                      weight_pre_process=ops.DoReFaWeightBinarizer),
    "gradual (not compacted)": bnn.BConfig(activation_pre_process=ops.SwishSignBinarizer,
                                          weight_pre_process=ops.GradualWeightBinarizer.with_args(bin_ratio=0.5, p=0.5)),
}


def grads(bconfig, compact: bool):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    model = bnn.prepare_binary_model(net, bconfig, ignore_layers_name=["_first_"]).train()
    model[2].weight.data[0, 0, 0, 0] = 0.0  # a zero weight: sgn 0, sign +1
    x = torch.randn(5, 3, 10, 10)
    original = binary_layer.compact_saved_signs
    if not compact:
        binary_layer.compact_saved_signs = lambda *args: contextlib.nullcontext()
    try:
        torch.manual_seed(1)
        model(x).square().sum().backward()
    finally:
        binary_layer.compact_saved_signs = original
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_compact_saving_gives_bit_identical_gradients(name):
    compact, full = grads(CONFIGS[name], True), grads(CONFIGS[name], False)
    assert compact.keys() == full.keys() and len(compact) >= 4
    for key in full:
        assert torch.equal(compact[key], full[key]), key


def test_saved_tensors_are_one_byte_masks():
    conv = bnn.prepare_binary_model(nn.Conv2d(4, 6, 3), CONFIGS["xnor centred + scale"]).train()
    x = torch.randn(2, 4, 7, 7)
    with F._SavedAsSigns([x.sign()], []) as inner:
        assert inner.signs
    assert inner.signs == [] and inner.channel_signs == []  # the float tensors are dropped on exit
    packed = []
    original = F._SavedAsSigns._pack

    def spy(self, t):
        out = original(self, t)
        packed.append(out if isinstance(out, torch.Tensor) else out[0])
        return out

    F._SavedAsSigns._pack = spy
    try:
        conv(x).sum().backward()
    finally:
        F._SavedAsSigns._pack = original
    masks = [p for p in packed if p.dtype == torch.bool]
    # the +-1 input, the binarized weight (saved by the scale's product) and the folded weight (saved by the conv)
    assert sorted(tuple(m.shape) for m in masks) == [(2, 4, 7, 7), (6, 4, 3, 3), (6, 4, 3, 3)]
    assert not any(p.dtype == torch.float32 and p.numel() >= 2 * 4 * 7 * 7 for p in packed)


def test_no_compaction_without_autograd_or_for_unvouched_binarizers():
    pre, wpre = ops.BasicInputBinarizer(), ops.XNORWeightBinarizer()
    x, w = torch.randn(3), torch.randn(2, 2)
    with torch.no_grad():
        assert isinstance(F.compact_saved_signs(pre, wpre, x, w), contextlib.nullcontext)
    assert isinstance(F.compact_saved_signs(nn.Identity(), ops.GradualWeightBinarizer(), x, w), contextlib.nullcontext)
    pre.enabled = False
    context = F.compact_saved_signs(pre, wpre, x, w)
    assert context.signs == [] and len(context.channel_signs) == 1
