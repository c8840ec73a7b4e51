"""The base class of every binarizer: an ``enabled`` switch and ``with_args``."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..config import Factory

__all__ = ["Binarizer", "name_binarizers", "channel_shape", "in_channels", "out_channels"]


class Binarizer(nn.Module):
    """Base of all binarizers in :mod:`bnn.ops`.

    ``enabled`` switches the binarizer off (identity) or on. It is a plain Python
    bool (no device sync in ``forward``, friendly to ``torch.compile``) saved in
    the state dict through ``get_extra_state``, so a staged schedule resumes with
    the right binarizers on.

    ``weight_bits`` is the bit width of the values a weight binarizer emits
    (``None`` for activation and output processes); :func:`bnn.summary` reads it.

    :meth:`sign_threshold` is how an input binarizer declares that it emits
    exactly ``sign(x - t)`` in {-1, +1} in eval mode; the packer (xnor-popcount
    kernel) and :func:`bnn.summary` (1-bit input) ask it, so a user's subclass
    is treated like its parent.

    Loading a state dict that has no entry at all for a binarizer (a checkpoint
    of the float model) keeps the binarizer's own initial values, so a float
    ``state_dict`` loads into a prepared model.

    ``binary_in_training`` says that the training forward emits exactly +1 or
    -1 per element (an activation binarizer) or +c_k or -c_k per output channel
    k (a weight binarizer); a binary layer then lets autograd keep those tensors
    as 1-byte masks (:func:`bnn.ops.functional.compact_saved_signs`). A subclass
    whose training output is anything else (a soft sign) must set it to False.

    **Dead-input check.** A binarizer that declares a sign threshold watches its
    first ``SATURATION_STEPS`` enabled training forwards (a forward hook that
    removes itself afterwards, so later steps cost nothing): if more than
    ``SATURATION_LIMIT`` of its outputs are on one side (a ReLU in front of a
    sign gives a constant +1), it warns once, naming its layer
    (``layer_name``, set by :func:`name_binarizers`, which
    :func:`bnn.prepare_binary_model` calls).
    """

    weight_bits: int | None = None
    binary_in_training: bool = False
    layer_name: str = ""
    SATURATION_STEPS = 8
    SATURATION_LIMIT = 0.99

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self._watch = [0, 0]  # +1 outputs, all outputs (a tensor sum, no device sync until the last step)
        self._watch_steps = 0
        self._watch_id = self.register_forward_hook(_watch_saturation).id

    def sign_threshold(self) -> Optional[torch.Tensor]:
        """``t`` when this binarizer's eval-mode output is exactly ``+1 if x >= t else -1``.

        A 0-dim tensor (one threshold) or one value per input channel; ``None``
        when the output is not +-1 (real, k-bit, ``{0, s}``). Output processes and
        weight binarizers return ``None``.
        """
        return None

    @classmethod
    def with_args(cls, **kwargs: Any) -> Factory:
        """A picklable factory that builds ``cls(**kwargs)`` (with the layer first where required)."""
        return Factory(cls, **kwargs)

    def get_extra_state(self) -> dict:
        return {"enabled": self.enabled}

    def set_extra_state(self, state: dict) -> None:
        self.enabled = bool(state.get("enabled", True))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if not any(key.startswith(prefix) for key in state_dict):
            return  # a float checkpoint: keep this binarizer's initial state
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return "" if self.enabled else "enabled=False"


def _watch_saturation(module: "Binarizer", inputs, output) -> None:
    """Forward hook of every binarizer: the dead-input check (see :class:`Binarizer`); unhooks itself when done."""
    if not (module.training and module.enabled):
        return
    if module.sign_threshold() is None or not isinstance(output, torch.Tensor):
        module._forward_hooks.pop(module._watch_id, None)  # not a sign-type binarizer: nothing to watch
        return
    with torch.no_grad():
        module._watch[0] = module._watch[0] + (output > 0).sum()
    module._watch[1] += output.numel()
    module._watch_steps += 1
    if module._watch_steps < module.SATURATION_STEPS:
        return
    module._forward_hooks.pop(module._watch_id, None)
    high = int(module._watch[0]) / max(1, module._watch[1])
    if max(high, 1.0 - high) > module.SATURATION_LIMIT and not _dead_input_warned[0]:
        _dead_input_warned[0] = True  # one warning per process; bnn.diagnose lists every dead layer
        warnings.warn(_dead_input_message(module, high, tuple(output.shape)), RuntimeWarning)


_dead_input_warned = [False]


def _dead_input_message(module: "Binarizer", high: float, shape: tuple) -> str:
    where = f"layer {module.layer_name!r}" if module.layer_name else f"an unnamed binarized layer (input {list(shape)})"
    side, value = (high, "+1") if high >= 0.5 else (1.0 - high, "-1")
    return (
        f"{where}: {100.0 * side:.1f}% of the inputs of its {type(module).__name__} lie on one side of the sign "
        f"threshold over the first {module._watch_steps} training steps, so it emits an almost constant {value} "
        "and the layer learns nothing. Likely cause: a ReLU (or another non-negative op) right before it. "
        "Fix: a binarizer with a learnable threshold (bnn.presets.relu_friendly(), "
        "bnn.ops.LearnedThresholdBinarizer), or BatchNorm right before the binarized layer. "
        "This warning is given once; bnn.diagnose(model, batch) lists every binarized layer's fraction of +1 inputs."
    )


def name_binarizers(model: nn.Module) -> nn.Module:
    """Set ``layer_name`` of every binarizer in ``model`` to the name of the layer that holds it; returns ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, Binarizer):
            module.layer_name = name.rpartition(".")[0]
    return model


def channel_shape(layer: nn.Module, channels: int) -> Sequence[int]:
    """Broadcast shape of a per-channel tensor for ``layer``'s input/output.

    Channels are dim 1 of a convolution's ``[N, C, *spatial]`` tensors and the
    last dim of a linear layer's ``[*, C]`` tensors.
    """
    if isinstance(layer, nn.modules.conv._ConvNd):
        return (1, channels) + (1,) * len(layer.kernel_size)
    return (channels,)


def _layer_size(layer: nn.Module, names: Sequence[str]) -> int:
    for attr in names:
        if hasattr(layer, attr):
            return getattr(layer, attr)
    raise TypeError(f"{type(layer).__name__} has none of {', '.join(names)}: pass a conv or linear layer")


def in_channels(layer: nn.Module) -> int:
    """Input channels of a conv layer, or input features of a linear layer."""
    return _layer_size(layer, ("in_channels", "in_features"))


def out_channels(layer: nn.Module) -> int:
    """Output channels of a conv layer, or output features of a linear layer."""
    return _layer_size(layer, ("out_channels", "out_features"))
