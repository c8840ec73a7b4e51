"""Output processes: the ``activation_post_process`` of a layer.

Their forward takes ``(out, x)``: the layer output and the layer's original,
unbinarized input. None of them writes in place into a tensor autograd needs.

A per-channel affine process also has ``fold(weight, bias)``: the binary layer
then scales its (small) weight instead of its (large) output, which gives the
same values and gradients for less work.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as TF

from .base import Binarizer, channel_shape, in_channels, out_channels

__all__ = ["BasicScaleBinarizer", "BiasScaleBinarizer", "XNORScaleBinarizer", "RealShortcut"]


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


class RealShortcut(Binarizer):
    """Bi-Real Net's real-valued shortcut around one binary layer (Liu et al. 2018).

    forward: y = out + S(x), where x is the layer's float (unbinarized) input and
    S maps it, without parameters, to the output's shape:

    - positions: where the output is smaller than the input (a stride s), each
      output position gets the mean of its window of x (adaptive average
      pooling; s x s average pooling for a stride-s conv with "same" padding,
      Bi-Real Net's downsampling shortcut);
    - channels: C_out = k·C_in repeats the input channels k times, [x, x, ...]
      (ReActNet's duplicated downsampling block, Liu et al. 2020);
      C_in = k·C_out averages k consecutive input channels.

    backward: dL/dout = dL/dy; x receives dL/dy through S on top of the binary
    path's straight-through gradient.

    ``gain`` (a buffer, ``None`` until then) is set only when
    :func:`bnn.pack_binary_model` folds a BatchNorm that follows the layer:
    BN(out + S(x)) = k·out + b + k·S(x), so the packed layer's epilogue takes k
    and b, and the shortcut is scaled by k_c (y = out + k_c·S(x)).

    A network built of conv → BN → ReLU → conv (torchvision's ResNets) sends all
    its information through the signs; one sign flip moves a binary conv's
    output by a whole ±2 step, so small changes compound over many binarized
    layers. This shortcut carries the real-valued input past every binarized
    layer, so each layer only adds a binary correction to it. It is an output
    process, not a binarizer: :func:`bnn.set_binarization` leaves it on, and a
    packed layer keeps it (its input is still at hand there).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        cin, cout = in_channels(module), out_channels(module)
        if cout % cin and cin % cout:
            raise ValueError(f"RealShortcut: {type(module).__name__} with {cin} input and {cout} output channels: the "
                             f"output channels must be a multiple or a divisor of the input channels; keep this "
                             f"layer out of the shortcut (another activation_post_process for it)")
        self.is_conv = isinstance(module, nn.modules.conv._ConvNd)
        self.spatial_dims = len(module.kernel_size) if self.is_conv else 0
        self.repeat = cout // cin  # 0 when channels are averaged
        self.average = cin // cout if cout < cin else 1
        self._shape = tuple(channel_shape(module, cout))
        self.register_buffer("gain", None)

    def shortcut(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """S(x): ``x`` pooled to the output's spatial ``size`` (its last dims; ``()`` for a linear layer) and
        repeated or averaged to its channels."""
        dims = self.spatial_dims
        if dims and tuple(x.shape[-dims:]) != tuple(size):
            pool = {1: TF.adaptive_avg_pool1d, 2: TF.adaptive_avg_pool2d, 3: TF.adaptive_avg_pool3d}[dims]
            x = pool(x, tuple(size))
        channel_dim = 1 if self.is_conv else x.dim() - 1
        if self.repeat > 1:
            x = torch.cat([x] * self.repeat, dim=channel_dim)
        elif self.average > 1:
            shape = x.shape
            x = x.reshape(shape[:channel_dim] + (shape[channel_dim] // self.average, self.average)
                          + shape[channel_dim + 1:]).mean(dim=channel_dim + 1)
        return x

    def forward(self, out: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if not self.enabled:
            return out
        if x is None:
            raise ValueError("RealShortcut needs the layer input: call it as post(out, x)")
        size = out.shape[-self.spatial_dims:] if self.spatial_dims else ()
        if self.gain is None:
            return out + self.shortcut(x, size)
        return torch.addcmul(out, self.shortcut(x, size), self.gain.view(self._shape))
