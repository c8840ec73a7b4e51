"""Fold each BatchNorm that directly follows a conv into that conv, found on the model's ``torch.fx`` graph.

For a packed conv ``y = dot * scale_c + shift_c`` followed by an eval-mode
BatchNorm ``BN(y) = (y - mu_c) * k_c + beta_c`` with ``k_c = gamma_c /
sqrt(var_c + eps)``, the pair is one packed conv with ``scale_c * k_c`` and
``(shift_c - mu_c) * k_c + beta_c`` (a BatchNorm after a binary conv folds into
the per-channel multiplier and bias of the popcount result, not into the +-1
weights; XNOR-Net, Rastegari et al. 2016). A float ``nn.Conv1d`` / ``nn.Conv2d``
followed by a BatchNorm is fused by ``torch.nn.utils.fusion.fuse_conv_bn_eval``.
The folded BatchNorm becomes ``nn.Identity``.

A pair is folded only when the graph proves it safe: the BatchNorm's only input
is the conv's output, that output has no other user, each module is called
exactly once, neither has hooks, the BatchNorm uses running statistics and
matches the conv's dimensionality and channels (BatchNorm2d after a 2-d conv,
BatchNorm1d after a 1-d conv; not after a Linear, whose BatchNorm1d normalizes
dim 1, the features only for 2-d inputs), and the packed conv keeps no output
post-process other than Bi-Real Net's shortcut (:class:`bnn.ops.RealShortcut`:
``BN(y + S(x)) = k_c * y + b_c + k_c * S(x)``, so the shortcut takes ``k`` as its
``gain``). A model ``torch.fx`` cannot trace is left unfolded (with
a warning): never folded wrongly.
"""
from __future__ import annotations

import collections
import warnings
from typing import List, Optional

import torch
import torch.fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..ops import RealShortcut
from .layers import PackedConv1d, PackedConv2d, PackedLayer, SignWordsPassthrough

__all__ = ["fold_batchnorms"]

_BN_FOR = {PackedConv2d: nn.BatchNorm2d, PackedConv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d,
           nn.Conv1d: nn.BatchNorm1d}


class _Tracer(torch.fx.Tracer):
    """Leaves: packed layers, bnn binary layers, sign-word passthroughs and every module without children (their
    own forward may check shapes or branch on data, e.g. RPReLU); only the containers' wiring is traced."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from ..layers import BinaryLayerMixin

        return (isinstance(m, (PackedLayer, BinaryLayerMixin, SignWordsPassthrough))
                or next(m.children(), None) is None or super().is_leaf_module(m, qualname))


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def _fold_into_packed(conv: PackedLayer, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``scale_c * k_c`` and ``(shift_c - mu_c) * k_c + beta_c`` into the packed epilogue; returns ``k`` (float64)."""
    k = (bn.weight.double() if bn.weight is not None else 1.0) * (bn.running_var.double() + bn.eps).rsqrt()
    beta = bn.bias.double() if bn.bias is not None else 0.0
    shift = conv.shift.double() if conv.shift is not None else 0.0
    new_shift = ((shift - bn.running_mean.double()) * k + beta).to(conv.scale)
    conv.scale.copy_((conv.scale.double() * k).to(conv.scale))
    if conv.shift is None:
        conv.shift = new_shift  # assigning to a registered (None) buffer name keeps it a buffer
    else:
        conv.shift.copy_(new_shift)
    return k


def trace_packed(model: nn.Module, left: str) -> Optional[torch.fx.Graph]:
    """The ``torch.fx`` graph of a (packed) model with the leaves of :class:`_Tracer`, or None with a warning that
    says what is ``left`` undone (data-dependent control flow, unsupported Python)."""
    try:
        return _Tracer().trace(model)
    except Exception as exc:
        warnings.warn(f"bnn.pack_binary_model: torch.fx cannot trace {type(model).__name__} "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {left}", stacklevel=3)
        return None


def calls_per_module(model: nn.Module, graph: Optional[torch.fx.Graph], left: str):
    """``(graph, calls)``: the model's graph (``graph``, else traced by :func:`trace_packed`) and how many times it
    calls each module (a Counter by ``id``); None when it cannot be traced (the warning says what is ``left``)."""
    graph = graph if graph is not None else trace_packed(model, left)
    if graph is None:
        return None
    return graph, collections.Counter(id(model.get_submodule(n.target)) for n in graph.nodes if n.op == "call_module")


def adjacent_modules(model: nn.Module, graph: Optional[torch.fx.Graph], left: str):
    """``(node, module, user, user_module)`` for every module call of the model's graph (``graph``, else traced by
    :func:`trace_packed`; nothing when it cannot be, with a warning saying what is ``left`` undone) whose only user
    is another module called on its output alone, both modules called once in the graph and without hooks: the
    pairs a rewrite may fuse or reorder. The modules are looked up as each pair comes, so a rewrite of an earlier
    pair is seen."""
    traced = calls_per_module(model, graph, left)
    if traced is None:
        return
    graph, calls = traced
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            continue
        first, second = model.get_submodule(node.target), model.get_submodule(user.target)
        if calls[id(first)] != 1 or calls[id(second)] != 1 or _has_hooks(first) or _has_hooks(second):
            continue
        yield node, first, user, second


@torch.no_grad()
def fold_batchnorms(model: nn.Module, graph: Optional[torch.fx.Graph] = None) -> List[str]:
    """Fold every provably safe conv -> BatchNorm pair of ``model`` (eval mode) in place; returns the folded BN names.

    ``graph``: the model's graph from :func:`trace_packed`, else traced here."""
    folded = []
    for node, conv, user, bn in adjacent_modules(model, graph, "BatchNorms are left unfolded"):
        if (type(conv) not in _BN_FOR or type(bn) is not _BN_FOR[type(conv)] or bn.training or bn.running_mean is None
                or bn.num_features != conv.out_channels):
            continue
        if isinstance(conv, PackedLayer):
            post = conv.post_process
            if not isinstance(post, (nn.Identity, RealShortcut)):
                continue
            k = _fold_into_packed(conv, bn)
            if isinstance(post, RealShortcut):  # BN(out + S(x)) = k*out + b + k*S(x)
                post.gain = k.to(conv.scale) if post.gain is None else (post.gain.double() * k).to(conv.scale)
        else:
            if conv.training or conv.padding_mode != "zeros":
                continue
            _set(model, node.target, fuse_conv_bn_eval(conv, bn))
        _set(model, user.target, nn.Identity())
        folded.append(user.target)
    return folded
