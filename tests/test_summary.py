"""bnn.summary: MACs, sizes, compression ratio and parameters by bit width, checked by hand."""
import pytest
import torch.nn as nn

from bnn import BConfig, prepare_binary_model, summary
from bnn.ops import BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer


def make():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 0: first, binarized below
        nn.BatchNorm2d(8),  # 16 params, 16 float buffers
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False),  # 2: grouped, binarized
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),  # 4: last, float
    )


def test_summary_numbers_by_hand():
    bconfig = BConfig(activation_pre_process=BasicInputBinarizer, weight_pre_process=XNORWeightBinarizer)
    model = prepare_binary_model(make(), bconfig, ignore_layers_name=["_last_"])
    lines = []
    result = summary(model, (3, 8, 8), print_fn=lines.append)
    rows = {row.name: row for row in result.layers}
    assert list(rows) == ["0", "2", "4"]
    # conv 0: 8x8x8 outputs, each 3*3*3 MACs
    assert rows["0"].macs == 8 * 8 * 8 * 3 * 9 == 13824
    # grouped conv 2: 8x4x4 outputs, each (8/2)*3*3 MACs
    assert rows["2"].macs == 8 * 4 * 4 * 4 * 9 == 4608
    assert rows["4"].macs == 10 * 128 == 1280
    assert result.total_macs == 13824 + 4608 + 1280
    assert result.binary_macs == 13824 + 4608
    assert (rows["0"].weight_bits, rows["2"].weight_bits, rows["4"].weight_bits) == (1, 1, 32)
    assert rows["0"].binary_input and not rows["4"].binary_input
    assert rows["0"].params == 216 + 8 and rows["2"].params == 288 and rows["4"].params == 1280 + 10
    # 1-bit weights packed in bytes, everything else 4 bytes
    assert (rows["0"].float_bytes, rows["0"].bytes) == (4 * 224, 27 + 4 * 8)
    assert (rows["2"].float_bytes, rows["2"].bytes) == (4 * 288, 36)
    assert rows["4"].float_bytes == rows["4"].bytes == 4 * 1290
    assert result.params_by_bits == {1: 216 + 288, 32: 8 + 16 + 1290}
    extra = 4 * (16 + 16)  # BatchNorm weight/bias and running mean/var (not num_batches_tracked)
    float_bytes = extra + 4 * (224 + 288 + 1290)
    nbytes = extra + 59 + 36 + 4 * 1290
    assert (result.float_bytes, result.bytes) == (float_bytes, nbytes)
    assert result.compression_ratio == pytest.approx(float_bytes / nbytes)
    text = "\n".join(lines)
    assert text == str(result)
    assert "1-bit parameters: 504" in text and "32-bit parameters: 1,314" in text
    assert f"compression {float_bytes / nbytes:.2f}x" in text
    assert f"{100 * 18432 / 19712:.1f}%" in text


def test_summary_of_float_model_and_scales():
    result = summary(make(), (3, 8, 8), print_fn=None)
    assert result.params_by_bits == {32: 224 + 16 + 288 + 1290}
    assert result.compression_ratio == 1.0 and result.binary_macs == 0
    # a learnable output scale is a 32-bit parameter of its layer; a disabled weight binarizer is 32-bit
    model = prepare_binary_model(make(), BConfig(BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer))
    model[2].weight_pre_process.enabled = False
    result = summary(model, (3, 8, 8), print_fn=None)
    rows = {row.name: row for row in result.layers}
    assert rows["0"].params == 224 + 8 and rows["2"].weight_bits == 32
    assert result.params_by_bits == {1: 216 + 1280, 32: 8 + 8 + 16 + 288 + 8 + 10 + 10}
    assert model.training  # mode restored


@pytest.mark.parametrize("bad, error", [(3, TypeError), ("3x32x32", TypeError), ((), ValueError),
                                        ((3, 0, 8), ValueError), ((3, 8.0, 8), ValueError), ([3, -1], ValueError)])
def test_summary_input_size_is_checked_with_a_one_line_error(bad, error):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(error, match=r"^summary: input_size must be a sequence of positive ints, one sample's shape "
                                    r"without the batch dimension, e\.g\. \(3, 32, 32\); got [^\n]*$"):
        summary(model, bad, print_fn=None)
    assert summary(model, [3, 5, 5], print_fn=None).total_macs == 4 * 9 * 27  # a list works as well as a tuple
