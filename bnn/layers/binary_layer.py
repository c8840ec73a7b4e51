"""What every fake-binarized layer shares: its three processes and the swap to and from float."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from ..config import BConfig, build_process
from ..ops.functional import compact_saved_signs

__all__ = ["BinaryLayerMixin"]

_PROCESSES = ("activation_pre_process", "weight_pre_process", "activation_post_process")


class BinaryLayerMixin:
    """Mixed into a torch layer: ``y = post(op(pre(x), wpre(W), b), x)``.

    ``pre``, ``wpre`` and ``post`` are the submodules ``activation_pre_process``,
    ``weight_pre_process`` and ``activation_post_process`` (``nn.Identity`` where
    the config leaves them out), so their parameters are in the state dict and
    reach the optimizer. ``applied_bconfig`` is the :class:`~bnn.BConfig` the
    layer was built with. The fake-binarized input is zero-padded like any
    convolution input.
    """

    _FLOAT_MODULE: type = nn.Module
    applied_bconfig: BConfig

    def _build_processes(self, bconfig: Optional[BConfig]) -> None:
        bconfig = BConfig() if bconfig is None else bconfig
        self.applied_bconfig = bconfig
        for name in _PROCESSES:
            setattr(self, name, build_process(getattr(bconfig, name), self))

    @classmethod
    def from_float(cls, module: nn.Module, bconfig: BConfig) -> "BinaryLayerMixin":
        """A binary layer that uses ``module``'s very ``weight`` and ``bias`` Parameter objects."""
        new = cls(**_hyperparameters_of(module), device="meta")
        new.weight = module.weight
        new.bias = module.bias
        new._build_processes(bconfig)
        new.train(module.training)
        return new

    def to_float(self) -> nn.Module:
        """The plain torch layer with the same ``weight`` and ``bias`` Parameter objects."""
        float_layer = self._FLOAT_MODULE(**_hyperparameters_of(self), device="meta")
        float_layer.weight = self.weight
        float_layer.bias = self.bias
        float_layer.train(self.training)
        return float_layer

    def binarized_weight(self) -> torch.Tensor:
        """``wpre(W)``: the weight the layer computes with."""
        return self.weight_pre_process(self.weight)

    def _binary_forward(self, x: torch.Tensor, op: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``post(op(pre(x), wpre(W), b), x)``; ``op(input, weight, bias)`` is the layer's product.

        An enabled output process with a ``fold`` method (a per-channel affine map)
        is applied to the weight and bias instead of the output: same result.
        """
        pre, wpre, post = self.activation_pre_process, self.weight_pre_process, self.activation_post_process
        x_in = x if isinstance(pre, nn.Identity) else pre(x)
        weight = self.weight if isinstance(wpre, nn.Identity) else wpre(self.weight)
        with compact_saved_signs(pre, wpre, x_in, weight) as saved:  # +-1 tensors saved as 1-byte masks
            if isinstance(post, nn.Identity):
                return op(x_in, weight, self.bias)
            if getattr(post, "enabled", False) and hasattr(post, "fold"):
                weight, bias = post.fold(weight, self.bias)
                if saved is not None and saved.channel_signs:
                    saved.channel_signs.append(weight)  # a per-channel scale keeps +-c per channel
                return op(x_in, weight, bias)
            return post(op(x_in, weight, self.bias), x)


def _hyperparameters_of(module: nn.Module) -> dict:
    if isinstance(module, nn.Linear):
        return dict(in_features=module.in_features, out_features=module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.modules.conv._ConvNd):
        return dict(
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    raise TypeError(f"cannot binarize a {type(module).__name__}: only Conv1d, Conv2d and Linear are supported")
