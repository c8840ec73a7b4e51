"""``pack_binary_model``: turn a trained fake-binarized model into a 1-bit inference model."""
from __future__ import annotations

import copy
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn

from . import functional as BF
from ..ops.base import in_channels
from .chain import chain_sign_words
from .fold import fold_batchnorms, trace_packed
from .layers import PackedConv1d, PackedConv2d, PackedLayer, PackedLinear
from .reorder import pool_before_activation

__all__ = ["pack_binary_model", "pack_layer", "UnsupportedLayerError"]


class UnsupportedLayerError(ValueError):
    """A layer the packer cannot represent exactly."""


def _is_off(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Identity) or getattr(mod, "enabled", True) is False


def _padding(layer: nn.Module, name: str) -> Tuple[int, ...]:
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise UnsupportedLayerError(f"layer '{name}': padding_mode={layer.padding_mode!r} is not supported by the "
                                    f"packer (only 'zeros')")
    pad = layer.padding
    if pad == "valid":
        return (0,) * len(layer.kernel_size)
    if pad == "same":
        totals = [d * (k - 1) for k, d in zip(layer.kernel_size, layer.dilation)]
        if any(t % 2 for t in totals):
            raise UnsupportedLayerError(f"layer '{name}': padding='same' with an even kernel pads asymmetrically, "
                                        f"which the packer does not support; use explicit integer padding")
        return tuple(t // 2 for t in totals)
    return tuple(int(p) for p in pad)


@torch.no_grad()
def pack_layer(layer: nn.Module, name: str = "") -> PackedLayer:
    """Pack one fake-binarized ``bnn.layers`` Conv1d / Conv2d / Linear (eval mode) into a packed layer.

    Raises :class:`UnsupportedLayerError` (naming ``name``) when the layer cannot be represented exactly.
    """
    from .. import ops
    from ..layers import Conv1d, Conv2d, Linear

    label = name or type(layer).__name__
    if layer.training:
        raise RuntimeError(f"bnn.pack_binary_model: layer '{label}' is in training mode; call model.eval() before packing")
    if not isinstance(layer, (Conv1d, Conv2d, Linear)):
        raise UnsupportedLayerError(f"layer '{label}': {type(layer).__name__} is not a bnn binary Conv1d/Conv2d/Linear")
    pre, wpre, post = layer.activation_pre_process, layer.weight_pre_process, layer.activation_post_process
    if _is_off(wpre):
        raise UnsupportedLayerError(f"layer '{label}': its weights are not binarized (weight_pre_process is off)")

    # weights: one magnitude per output channel, sign bits
    wb = wpre(layer.weight).detach().float()
    cout = wb.shape[0]
    mag = wb.abs().reshape(cout, -1)
    alpha, amin = mag.amax(dim=1), mag.amin(dim=1)
    bad = (alpha - amin) > 1e-6 * alpha.clamp_min(1e-30)
    if bool(bad.any()):
        c = int(bad.nonzero()[0])
        raise UnsupportedLayerError(
            f"layer '{label}': {type(wpre).__name__} does not give one magnitude per output channel (channel {c}: "
            f"|w| in [{float(amin[c]):.4g}, {float(alpha[c]):.4g}]), so its weights are not 1-bit; finish the "
            f"binarization (e.g. GradualWeightBinarizer bin_ratio=1, p=1) or leave the layer unpacked")
    negative = wb < 0

    # input: +-1 (packed on the fly) or real (kept quantizer, binary weights only)
    threshold = pre.sign_threshold() if isinstance(pre, ops.Binarizer) else None
    binary_input = threshold is not None
    if binary_input:  # sign(x - t): one threshold per input channel, or none at all for t = 0
        threshold = threshold.detach().float().reshape(-1).expand(in_channels(layer)).clone()
        if not bool(threshold.any()):
            threshold = None

    # output: fold per-channel scale / bias into y = dot * scale + shift
    scale = alpha.clone()
    shift = layer.bias.detach().float().clone() if layer.bias is not None else None
    post_kept = None
    if _is_off(post):
        pass
    elif type(post) is ops.BasicScaleBinarizer:
        s = post.scale.detach().float().reshape(-1)
        scale, shift = scale * s, (shift * s if shift is not None else None)
    elif type(post) is ops.BiasScaleBinarizer:
        s, b = post.scale.detach().float().reshape(-1), post.bias.detach().float().reshape(-1)
        scale, shift = scale * s, (shift * s + b if shift is not None else b.clone())
    else:
        post_kept = copy.deepcopy(post)  # e.g. XNORScaleBinarizer needs the float input

    common = dict(groups=1, binary_input=binary_input, input_quantizer=None if binary_input else copy.deepcopy(pre),
                  post_process=post_kept, has_shift=shift is not None, has_threshold=threshold is not None)
    if isinstance(layer, Linear):
        packed = PackedLinear(layer.in_features, layer.out_features, **common)
    else:
        common.update(kernel_size=tuple(layer.kernel_size), stride=tuple(layer.stride), padding=_padding(layer, label),
                      dilation=tuple(layer.dilation), groups=layer.groups)
        cls = PackedConv2d if isinstance(layer, Conv2d) else PackedConv1d
        packed = cls(layer.in_channels, layer.out_channels, **common)
    packed.packed_weight.copy_(BF.pack_weight_bits(negative.cpu(), packed.groups))
    packed.scale.copy_(scale)
    if shift is not None:
        packed.shift.copy_(shift)
    if threshold is not None:
        packed.input_threshold.copy_(threshold)
    packed.layer_name = name
    packed.eval()
    return packed.to(layer.weight.device)


def pack_binary_model(model: nn.Module, on_unsupported: str = "error", inplace: bool = False,
                      fold_batchnorm: bool = True, chain_signs: bool = True, pool_first: bool = True) -> nn.Module:
    """Pack every fake-binarized layer of ``model`` (in eval mode) to 1-bit weights for inference.

    Each ``bnn.layers`` Conv1d / Conv2d / Linear whose weights are binarized
    (one magnitude per output channel) becomes a :class:`~bnn.deploy.PackedConv2d`
    / :class:`~bnn.deploy.PackedConv1d` / :class:`~bnn.deploy.PackedLinear`:
    sign bits packed 64 per int64 word plus float32 per-channel scales.
    If its input binarizer gives +-1 the xnor-popcount kernel runs
    (dot = K - 2 popcount(a XOR w)); otherwise the input stays real and only
    the weights are 1-bit. Layers that are not binarized stay as they are. In
    eval mode the result equals the fake-binarized model's output up to float
    rounding.

    The whole graph is prepared for inference too: with ``fold_batchnorm`` each
    BatchNorm that directly follows a conv (packed or float) is folded into it
    (:func:`bnn.deploy.fold.fold_batchnorms`), and a model with packed 2-d convs
    gets channels-last float weights, so that every activation keeps the
    channels-last layout of the packed kernels end to end (no layout mixing in
    residual adds and pools). With ``chain_signs`` a packed conv whose output
    reaches the next packed conv only through clamp activations (ReLU,
    Hardtanh, ...) emits that conv's input sign bits directly instead of its
    float output (:mod:`bnn.deploy.chain`); the outputs are unchanged. With
    ``pool_first`` a max pool that follows a nondecreasing activation (the
    ReLU of a ResNet stem) runs first and the activation on its smaller output
    (:mod:`bnn.deploy.reorder`; exact).

    Args:
        model: a prepared model (or one binary layer) in eval mode.
        on_unsupported: ``"error"`` (default) raises for a binarized layer that
            cannot be packed exactly; ``"warn"`` leaves it unpacked with a warning.
        inplace: modify ``model`` itself instead of a deep copy.
        fold_batchnorm: fold conv -> BatchNorm pairs (default True).
        chain_signs: sign-bit chaining of packed conv pairs (default True).
        pool_first: max pools before the activations in front of them (default True).

    Returns:
        The packed model (a packed layer if ``model`` is a single binary layer), in eval mode.
    """
    from ..layers import BinaryLayerMixin

    if on_unsupported not in ("error", "warn"):
        raise ValueError(f"pack_binary_model: on_unsupported must be 'error' or 'warn', got {on_unsupported!r}")
    for name, mod in model.named_modules():
        if isinstance(mod, BinaryLayerMixin) and mod.training:
            raise RuntimeError(f"bnn.pack_binary_model: layer '{name or type(mod).__name__}' is in training mode; "
                               f"call model.eval() before packing")
    if model.training:
        raise RuntimeError(f"bnn.pack_binary_model: the model ({type(model).__name__}) is in training mode; "
                           f"call model.eval() before packing")
    if not inplace:
        model = copy.deepcopy(model)

    def convert(layer: nn.Module, name: str) -> Optional[nn.Module]:
        if _is_off(layer.weight_pre_process):
            return None  # weights not binarized: stays as it is
        try:
            return pack_layer(layer, name)
        except UnsupportedLayerError as exc:
            if on_unsupported == "error":
                raise
            warnings.warn(f"{exc}; left unpacked", stacklevel=3)
            return None

    if isinstance(model, BinaryLayerMixin):
        packed = convert(model, "")
        return packed if packed is not None else model
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, BinaryLayerMixin):
            continue
        packed = convert(mod, name)
        if packed is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, packed)
    if fold_batchnorm or chain_signs or pool_first:
        left = ", ".join(what for what, on in (("BatchNorms are left unfolded", fold_batchnorm),
                                               ("packed convs are not sign-chained", chain_signs),
                                               ("max pools stay after their activations", pool_first)) if on)
        graph = trace_packed(model, left)
        if graph is not None and fold_batchnorm:
            fold_batchnorms(model, graph)
        if graph is not None and chain_signs:
            chain_sign_words(model, graph)
        if graph is not None and pool_first:
            pool_before_activation(model, graph)
    if any(isinstance(m, PackedConv2d) for m in model.modules()):
        for m in model.modules():  # float 2-d convs give channels-last outputs when their weights are
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    return model.eval()
