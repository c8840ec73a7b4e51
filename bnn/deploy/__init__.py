"""Deployment: pack fake-binarized models to true 1-bit weights and run them fast.

``packed = bnn.deploy.pack_binary_model(model.eval())`` swaps every binarized
Conv1d / Conv2d / Linear for a packed layer (sign bits in int64 words, float32
per-channel scales). Binary-input layers run an xnor-popcount kernel
(dot = K - 2 popcount(a XOR w); XNOR-Net, Rastegari et al. 2016): the optional C
extension ``bnn.deploy._kernel`` (OpenMP, AVX-512 VPOPCNTDQ / AVX2 / scalar
chosen at run time) on the CPU, a pure-torch path elsewhere (CUDA, float64,
ONNX export, or when the extension was not built); both give identical numbers.
The packer also folds each BatchNorm that directly follows a conv into it
(:mod:`bnn.deploy.fold`), lets a packed conv hand the next packed conv its
input sign bits when only clamp activations lie between them
(:mod:`bnn.deploy.chain`), runs a max pool before the ReLU in front of it
(:mod:`bnn.deploy.reorder`) and keeps activations channels-last. Packed layers
check their input and name themselves in errors; under ``torch.compile`` and
``torch.export`` each one is the custom op ``torch.ops.bnn.binary_conv``.
"""
from .functional import pack_weight_bits, unpack_weight_signs
from .kernel import available_isas, kernel_available, set_isa
from .layers import FORMAT_VERSION, PackedConv1d, PackedConv2d, PackedFormatError, PackedLayer, PackedLinear
from .pack import UnsupportedLayerError, pack_binary_model, pack_layer

__all__ = [
    "pack_binary_model",
    "pack_layer",
    "PackedLayer",
    "PackedConv1d",
    "PackedConv2d",
    "PackedLinear",
    "PackedFormatError",
    "UnsupportedLayerError",
    "FORMAT_VERSION",
    "kernel_available",
    "available_isas",
    "set_isa",
    "pack_weight_bits",
    "unpack_weight_signs",
]
