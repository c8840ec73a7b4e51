"""ONNX export of fake-binarized and packed models (torch.onnx dynamo exporter, checked with onnx.checker)."""
import io
import warnings

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import pack_binary_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


def _model(chained=False):
    """Float stem, BN, a binary conv, ReLU (then, ``chained``, a second binary conv the first hands its sign words),
    a binary Linear; random RSign biases."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        *([nn.Conv2d(16, 16, 3, padding=1)] if chained else []), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    bc = bnn.BConfig(activation_pre_process=ops.InputBiasBinarizer, weight_pre_process=ops.XNORWeightBinarizer,
                     activation_post_process=ops.BasicScaleBinarizer)
    model = bnn.prepare_binary_model(net, bc, ignore_layers_name=["_first_"])
    for mod in model.modules():
        if isinstance(mod, ops.InputBiasBinarizer):
            mod.bias.data.normal_(0, 0.2)
    return model.eval()


def _export(model, x):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=True, verbose=False)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _run(proto, x):
    from onnx.reference import ReferenceEvaluator

    return torch.from_numpy(ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})[0])


@pytest.mark.parametrize("packed", [False, True], ids=["fake", "packed"])
def test_onnx_export(packed):
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    if packed:
        model = pack_binary_model(model)
    proto = _export(model, x)
    ops_used = {node.op_type for node in proto.graph.node}
    assert "Conv" in ops_used and "Where" in ops_used  # sign = Where(Less(x, t), -1, 1)
    out = _run(proto, x)
    assert torch.allclose(out, ref, atol=1e-4 * ref.abs().max().item())


def test_onnx_export_of_a_sign_chained_model():
    """A packed conv that hands the next one its sign words (bnn.deploy.chain) exports through the pure-torch
    path: the words are made with products and sums and read back with BitwiseAnd."""
    model = _model(chained=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    packed = pack_binary_model(model)
    assert packed[2].output_threshold is not None  # chained to packed[4]
    out = _run(_export(packed, x), x)
    assert torch.allclose(out, ref, atol=1e-4 * ref.abs().max().item())
