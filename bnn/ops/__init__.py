"""The binarizer zoo: activation binarizers, weight binarizers and output processes.

Every binarizer is a small :class:`Binarizer` module with an ``enabled`` switch;
its docstring states its forward and backward math and its paper. sign(0) is +1;
NaN stays NaN.
"""
from .activation import (
    ApproxSignBinarizer,
    BasicInputBinarizer,
    InputBiasBinarizer,
    KBitActivationQuantizer,
    LearnedThresholdBinarizer,
    ScaleThresholdBinarizer,
    SignBinarizer,
    StochasticInputBinarizer,
    SwishSignBinarizer,
)
from .base import Binarizer, name_binarizers
from .registry import get_binarizer, register_binarizer, registered_binarizers
from .scale import BasicScaleBinarizer, BiasScaleBinarizer, RealShortcut, XNORScaleBinarizer
from .weight import DoReFaWeightBinarizer, GradualWeightBinarizer, MagnitudeAwareWeightBinarizer, XNORWeightBinarizer

__all__ = [
    "Binarizer",
    "SignBinarizer",
    "BasicInputBinarizer",
    "ApproxSignBinarizer",
    "SwishSignBinarizer",
    "InputBiasBinarizer",
    "LearnedThresholdBinarizer",
    "StochasticInputBinarizer",
    "ScaleThresholdBinarizer",
    "KBitActivationQuantizer",
    "XNORWeightBinarizer",
    "DoReFaWeightBinarizer",
    "MagnitudeAwareWeightBinarizer",
    "GradualWeightBinarizer",
    "BasicScaleBinarizer",
    "BiasScaleBinarizer",
    "XNORScaleBinarizer",
    "RealShortcut",
]

for _name in __all__[2:]:
    register_binarizer(globals()[_name])
del _name

__all__ += ["register_binarizer", "get_binarizer", "registered_binarizers", "name_binarizers"]
