"""Sign-bit chaining: a packed conv that feeds the next packed conv emits that conv's input sign bits directly.

The second conv of a pair ``conv1 -> f -> conv2`` binarizes its input:
bit_c = ``f(y_c) < t_c``, with y the first conv's output (its epilogue
``dot * scale_c + shift_c``, a following BatchNorm folded in), f the elementwise
activations in between and t the second conv's input threshold (-bias of RSign,
0 for the plain sign; ReActNet, Liu et al. 2020). The activations chained here
are clamps, ``f(y) = min(max(y, lo), hi)`` (``nn.ReLU``: lo = 0, hi = inf;
``nn.ReLU6`` / ``nn.Hardtanh``; ``nn.Identity`` and dropout in eval mode), for which

    f(y) < t   <=>   y < t',   t' = -inf if t <= lo,  +inf if t > hi,  else t,

exactly (a clamp does not round). So ``conv1`` compares its own output with t'
(its ``output_threshold``) and returns sign words, int64 ``[N, H, W, ceil(C / 64)]``
(bit c % 64 of word c // 64 set for a -1 input), 1/32 of the float output; the
activations in between pass the words through (wrapped in
:class:`bnn.deploy.layers.SignWordsPassthrough`) and ``conv2`` skips its input
binarization. On the native kernel the words come straight from ``conv1``'s
tile epilogues (AVX-512, AVX2; the scalar path packs its output rows while they
are in cache), and the activation's pass over the float output is never made.
The model's outputs are bit-identical to the unchained model's.

A pair is chained only when the ``torch.fx`` graph proves it safe: both convs
are 2-d packed convs with binary input and no output post-process (a real
shortcut, Bi-Real Net's, needs the float output and the float input), the
second one has one group and takes the first one's channels, each conv is called
once, each node in between is one of the activation modules above applied to
the previous node alone, every node of the chain has exactly one user, and no
module of it has hooks. An activation module called elsewhere too (torchvision's
``BasicBlock.relu``) keeps working there: its wrapper applies it to float inputs.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn

from .fold import _has_hooks, _set, calls_per_module
from .layers import PackedConv2d, SignWordsPassthrough

__all__ = ["chain_sign_words"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _clamp_range(m: nn.Module) -> Optional[Tuple[float, float]]:
    """(lo, hi) of an activation that is a clamp in eval mode, else None."""
    if isinstance(m, SignWordsPassthrough):
        m = m.module
    if type(m) is nn.ReLU:
        return 0.0, math.inf
    if type(m) in (nn.Hardtanh, nn.ReLU6):
        return float(m.min_val), float(m.max_val)
    if type(m) is nn.Identity or (isinstance(m, _DROPOUTS) and not m.training):
        return -math.inf, math.inf
    return None


def _through_clamp(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """t' with ``clamp(y, lo, hi) < t  <=>  y < t'`` for every y (per channel)."""
    t = t.clone()
    t[t <= lo] = -math.inf
    t[t > hi] = math.inf
    return t


def _chainable_conv(m: nn.Module) -> bool:
    return (type(m) is PackedConv2d and m.binary_input and isinstance(m.post_process, nn.Identity)
            and not m.training and not _has_hooks(m))


@torch.no_grad()
def chain_sign_words(model: nn.Module, graph: Optional[torch.fx.Graph] = None) -> List[Tuple[str, str]]:
    """Chain every provably safe packed-conv pair of ``model`` (packed, eval mode) in place; returns the
    (producer, consumer) names.

    ``graph``: the model's graph from :func:`bnn.deploy.fold.trace_packed` (module names are what matter: a
    BatchNorm folded since then is looked up as the ``nn.Identity`` it became), else traced here."""
    traced = calls_per_module(model, graph, "packed convs are not sign-chained")
    if traced is None:
        return []
    graph, calls = traced
    chained = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        first = model.get_submodule(node.target)
        if not _chainable_conv(first) or first.output_threshold is not None or calls[id(first)] != 1:
            continue
        ranges, between, cur, second = [], [], node, None
        while len(cur.users) == 1:
            user = next(iter(cur.users))
            if user.op != "call_module" or user.args != (cur,) or user.kwargs:
                break
            mod = model.get_submodule(user.target)
            if _chainable_conv(mod):
                second = (user.target, mod)
                break
            r = _clamp_range(mod)
            if r is None or _has_hooks(mod):
                break
            ranges.append(r)
            between.append(user.target)
            cur = user
        if second is None:
            continue
        name, conv2 = second
        if conv2.groups != 1 or conv2.in_channels != first.out_channels or calls[id(conv2)] != 1:
            continue
        t = conv2.input_threshold
        t = torch.zeros(conv2.in_channels) if t is None else t.detach().float().cpu()
        for lo, hi in reversed(ranges):
            t = _through_clamp(t, lo, hi)
        first.output_threshold = t.to(first.scale)  # assigning to a registered (None) buffer keeps it a buffer
        for target in between:
            mod = model.get_submodule(target)
            if type(mod) is not nn.Identity and not isinstance(mod, SignWordsPassthrough):  # Identity passes words
                _set(model, target, SignWordsPassthrough(mod))
        chained.append((node.target, name))
    return chained
