"""Output processes: the ``activation_post_process`` of a layer.

Their forward takes ``(out, x)``: the layer output and the layer's original,
unbinarized input. None of them writes in place into a tensor autograd needs.

A per-channel affine process also has ``fold(weight, bias)``: the binary layer
then scales its (small) weight instead of its (large) output, which gives the
same values and gradients for less work.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as TF

from .base import Binarizer, channel_shape, out_channels

__all__ = ["BasicScaleBinarizer", "BiasScaleBinarizer", "XNORScaleBinarizer"]


class BasicScaleBinarizer(Binarizer):
    """A learnable per-output-channel scale (XNOR-Net++, Bulat & Tzimiropoulos 2019).

    forward: y = out * gamma_c, gamma initialised to 1
    backward: dL/dout = dL/dy * gamma_c, dL/dgamma_c = sum of dL/dy * out over everything but c
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._shape = tuple(channel_shape(module, out_channels(module)))
        self.scale = nn.Parameter(torch.ones(out_channels(module)))

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return out * self.scale.view(self._shape) if self.enabled else out

    def fold(self, weight: torch.Tensor, bias: torch.Tensor | None):
        """``(W * gamma, b * gamma)``: the same output (and gradients) as scaling the layer output,
        at the cost of a weight-sized instead of an activation-sized product."""
        gamma = self.scale.view((-1,) + (1,) * (weight.dim() - 1))
        return weight * gamma, None if bias is None else bias * self.scale


class BiasScaleBinarizer(Binarizer):
    """A learnable per-output-channel scale and bias: y = out * gamma_c + beta_c (gamma = 1, beta = 0 at start)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        channels = out_channels(module)
        self._shape = tuple(channel_shape(module, channels))
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if not self.enabled:
            return out
        return torch.addcmul(self.bias.view(self._shape), out, self.scale.view(self._shape))

    def fold(self, weight: torch.Tensor, bias: torch.Tensor | None):
        """``(W * gamma, b * gamma + beta)``: the same output as the process applied to the layer output."""
        gamma = self.scale.view((-1,) + (1,) * (weight.dim() - 1))
        return weight * gamma, self.bias if bias is None else torch.addcmul(self.bias, bias, self.scale)


class XNORScaleBinarizer(Binarizer):
    """XNOR-Net's input-magnitude factor K (Rastegari et al. 2016).

    For a convolution, A = mean over input channels of |x|, and
    K = A convolved with a k x k averaging kernel (the layer's kernel size,
    stride, padding and dilation), so K[i] is the mean |x| under the receptive
    field of output pixel i; y = out * K. For a linear layer K = mean(|x|) over
    the features of each sample. K is differentiable (it is part of the graph).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.is_conv = isinstance(module, nn.modules.conv._ConvNd)
        if self.is_conv:
            self.kernel_size = tuple(module.kernel_size)
            self.stride = tuple(module.stride)
            self.padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
            self.dilation = tuple(module.dilation)

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """K for input ``x`` (broadcastable against the layer output)."""
        if not self.is_conv:
            return x.abs().mean(dim=-1, keepdim=True)
        a = x.abs().mean(dim=1, keepdim=True)
        numel = 1
        for k in self.kernel_size:
            numel *= k
        kernel = torch.full((1, 1) + self.kernel_size, 1.0 / numel, dtype=x.dtype, device=x.device)
        conv = TF.conv1d if len(self.kernel_size) == 1 else (TF.conv2d if len(self.kernel_size) == 2 else TF.conv3d)
        return conv(a, kernel, None, self.stride, self.padding, self.dilation)

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if not self.enabled:
            return out
        if x is None:
            raise ValueError("XNORScaleBinarizer needs the layer input: call it as post(out, x)")
        return out * self.magnitude(x)
