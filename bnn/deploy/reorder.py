"""Max pool first: ``pool(f(x)) == f(pool(x))`` for a nondecreasing activation f, on a fraction of the data.

A max pool keeps the largest value of each window, and a nondecreasing
elementwise f keeps the order of values, so ``max_i f(x_i) = f(max_i x_i)``
exactly (floating-point rounding is monotone too, and a NaN propagates through
both orders). The packer therefore runs a max pool that directly follows such an
activation first and the activation on the pool's output, which for a 3x3 / 2
pool is a quarter of the elements: the stem of a ResNet, ``conv -> BN -> ReLU ->
MaxPool2d``, whose ReLU otherwise passes over the largest activation of the
network. The activations: the clamps ``nn.ReLU``, ``nn.ReLU6`` and ``nn.Hardtanh``,
and ``nn.LeakyReLU`` with a slope >= 0.

A pair is reordered only when the ``torch.fx`` graph proves it safe: the pool's
only input is the activation's output, which has no other user, each module is
called exactly once, neither has hooks, the pool returns no indices (the
position of a window's maximum can differ where the activation makes values
equal), and an in-place activation's input has no other user (it would no
longer see the activated values). The activation becomes ``nn.Identity`` and the
pool a :class:`PoolThenActivation` holding both.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn

from .fold import _set, adjacent_modules

__all__ = ["PoolThenActivation", "pool_before_activation"]

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _nondecreasing(m: nn.Module) -> bool:
    """An elementwise activation module that is nondecreasing (and not the identity)."""
    if type(m) is nn.LeakyReLU:
        return m.negative_slope >= 0
    return type(m) in (nn.ReLU, nn.ReLU6, nn.Hardtanh)


class PoolThenActivation(nn.Module):
    """``act(pool(x))``: a max pool moved in front of the nondecreasing activation that preceded it
    (:func:`pool_before_activation`); the same output as ``pool(act(x))``."""

    def __init__(self, pool: nn.Module, act: nn.Module):
        super().__init__()
        self.pool = pool
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pool(x))


@torch.no_grad()
def pool_before_activation(model: nn.Module, graph: Optional[torch.fx.Graph] = None) -> List[Tuple[str, str]]:
    """Move every provably safe max pool of ``model`` in front of the activation before it, in place; returns the
    (activation, pool) names.

    ``graph``: the model's graph from :func:`bnn.deploy.fold.trace_packed` (module names are what matter), else
    traced here."""
    moved = []
    for node, act, user, pool in adjacent_modules(model, graph, "max pools stay after their activations"):
        if (not _nondecreasing(act) or type(pool) not in _MAX_POOLS or pool.return_indices or len(node.args) != 1
                or node.kwargs):
            continue
        source = node.args[0]
        if act.inplace and (not isinstance(source, torch.fx.Node) or len(source.users) != 1):
            continue
        _set(model, user.target, PoolThenActivation(pool, act))
        _set(model, node.target, nn.Identity())
        moved.append((node.target, user.target))
    return moved
