"""Named binarization presets for the published methods, like ``torch.ao``'s named qconfigs.

Each preset is a function that returns a :class:`bnn.BConfig`; keyword arguments
tune it. Look one up by name with :func:`get_preset` (what a YAML recipe does).

=================  ================================================  ==========================================
name               input / weight / output                           paper
=================  ================================================  ==========================================
``xnor_net``       sign (clipped STE) / sign(W)·mean|W| per output   Rastegari et al. 2016, XNOR-Net
                   channel / K·out (mean |x| under the kernel)
``bireal``         sign (ApproxSign) / sign(W)·mean|W| (scale        Liu et al. 2018, Bi-Real Net
                   detached) / none
``reactnet``       sign(x + b_c) (RSign, ApproxSign) / as Bi-Real    Liu et al. 2020, ReActNet
                   / none
``nncf``           s·H(x − s·t) (learned scale, threshold) /         NNCF binarization (Kozlov et al. 2020,
                   XNOR or DoReFa weights / none                     "Neural Network Compression Framework")
``relu_friendly``  sign(x − t_c), t_c learnable, started at the      ReActNet's RSign (Liu et al. 2020) with a
                   channel mean of the first batch / as Bi-Real      data-derived start, Bi-Real Net's real
                   / + x (a real shortcut around the layer)          shortcut (Liu et al. 2018); ReLU networks
=================  ================================================  ==========================================

In an ordinary (torchvision-style) network every binarized conv is fed by a
ReLU, so a plain sign sees only values >= 0 and emits a constant +1: the layer
learns nothing (the binarizers warn about it during the first training steps).
``relu_friendly`` fixes such a network without rewriting it, keeping float
the layers that the published binary ResNets keep float (:data:`FLOAT_LAYERS`)::

    model = bnn.prepare_binary_model(resnet18(), bnn.presets.relu_friendly(),
                                     ignore_layers_name=bnn.presets.FLOAT_LAYERS)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from .config import BConfig
from .hints import did_you_mean
from . import ops

__all__ = ["FLOAT_LAYERS", "xnor_net", "bireal", "reactnet", "nncf", "relu_friendly", "get_preset", "preset_names"]

#: The layers a binary ResNet keeps float, as XNOR-Net, Bi-Real Net (Liu et al. 2018)
#: and ReActNet (Liu et al. 2020) do: the stem conv (``_first_``), the classifier
#: (``_last_``) and the 1x1 convs of the downsampling shortcuts (torchvision names
#: them ``downsample``, many ResNets ``shortcut``). Binarized, those shortcuts are
#: the only path from one stage to the next and every bit lost there is lost to
#: the whole network; they hold a few percent of the weights. Pass it as
#: ``ignore_layers_name`` to :func:`bnn.prepare_binary_model` (a network without such
#: shortcuts: ``["_first_", "_last_"]``, since an unmatched regex is an error).
FLOAT_LAYERS: Tuple[str, ...] = ("_first_", "_last_", "$.*(downsample|shortcut).*$")


def xnor_net(activation_scale: bool = True) -> BConfig:
    """XNOR-Net (Rastegari et al. 2016): sign inputs, per-output-channel scaled sign weights.

    With ``activation_scale`` the output is multiplied by K, the mean of |x| under
    each receptive field (:class:`bnn.ops.XNORScaleBinarizer`).
    """
    return BConfig(activation_pre_process=ops.BasicInputBinarizer,
                   activation_post_process=ops.XNORScaleBinarizer if activation_scale else None,
                   weight_pre_process=ops.XNORWeightBinarizer)


def bireal() -> BConfig:
    """Bi-Real Net (Liu et al. 2018): ApproxSign inputs, magnitude-aware sign weights (scale not trained through)."""
    return BConfig(activation_pre_process=ops.ApproxSignBinarizer,
                   weight_pre_process=ops.MagnitudeAwareWeightBinarizer)


def reactnet() -> BConfig:
    """ReActNet (Liu et al. 2020): RSign inputs sign(x + b_c) with a learnable shift, Bi-Real weights."""
    return BConfig(activation_pre_process=ops.InputBiasBinarizer,
                   weight_pre_process=ops.MagnitudeAwareWeightBinarizer)


def nncf(mode: str = "xnor") -> BConfig:
    """NNCF's binarization: s·H(x − s·t) inputs and XNOR (``mode="xnor"``) or DoReFa (``"dorefa"``) weights."""
    weights = {"xnor": ops.XNORWeightBinarizer, "dorefa": ops.DoReFaWeightBinarizer}
    if mode not in weights:
        raise ValueError(f"bnn.presets.nncf: unknown mode {mode!r}" + did_you_mean(mode, weights))
    return BConfig(activation_pre_process=ops.ScaleThresholdBinarizer, weight_pre_process=weights[mode])


def relu_friendly(shortcut: bool = True) -> BConfig:
    """For ordinary ReLU networks: sign(x − t_c) inputs whose learnable threshold starts at the data, Bi-Real
    weights, and (``shortcut``) a real-valued shortcut around every binarized layer.

    The input binarizer is :class:`bnn.ops.LearnedThresholdBinarizer`: ReActNet's
    RSign (Liu et al. 2020), its per-channel shift initialised on the first
    batch to minus the channel mean, so a sign fed by a ReLU splits its inputs
    instead of emitting a constant +1. Weights as in Bi-Real Net (Liu et al.
    2018). The output process :class:`bnn.ops.RealShortcut` adds the layer's
    float input to its output (Bi-Real Net's shortcut, parameter-free): in a
    torchvision-style network (conv → BN → ReLU → conv, a shortcut only every
    second conv) everything else has to pass through the signs, and sign flips
    compound over the chained binarized convs; with the shortcut, torchvision's
    ``resnet18`` learns from random weights (``python benchmarks/relu_resnet18.py``).
    Pass ``shortcut=False`` for a network that already has a shortcut around
    every binarized conv (Bi-Real Net's or ReActNet's blocks, ``bnn.models``'
    ``bn_first`` and ``bireal`` blocks). Starting from the trained float
    weights and distilling from them closes more of the gap; ``python
    benchmarks/accuracy.py`` compares the presets at the same budget.
    """
    return BConfig(activation_pre_process=ops.LearnedThresholdBinarizer,
                   activation_post_process=ops.RealShortcut if shortcut else None,
                   weight_pre_process=ops.MagnitudeAwareWeightBinarizer)


_PRESETS: Dict[str, Callable[..., BConfig]] = {"xnor_net": xnor_net, "bireal": bireal, "reactnet": reactnet, "nncf": nncf,
                                               "relu_friendly": relu_friendly}


def get_preset(name: str, **kwargs) -> BConfig:
    """The preset ``name`` (see the module docstring) built with ``kwargs``; a ``KeyError`` names the closest preset."""
    key = str(name).lower().replace("-", "_")
    if key not in _PRESETS:
        raise KeyError(f"unknown binarization preset {name!r}" + did_you_mean(name, _PRESETS))
    return _PRESETS[key](**kwargs)


def preset_names() -> List[str]:
    """The names :func:`get_preset` accepts."""
    return sorted(_PRESETS)
