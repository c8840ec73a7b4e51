"""Knowledge distillation from a float teacher (ReActNet's distributional loss).

ReActNet (Liu et al., ECCV 2020) trains the binary student to match the
teacher's softmax: ``L = -sum_c p_t(c) log p_s(c)``, which equals
``KL(p_t || p_s)`` plus the teacher's entropy (a constant), so both have the
same gradient. Here the loss is the KL divergence proper, with Hinton's
temperature ``T`` (gradients scaled back by ``T**2``)::

    p_t = softmax(z_t / T),  log p_s = log_softmax(z_s / T)
    KL  = T**2 * mean_over_batch( sum_c p_t(c) * (log p_t(c) - log p_s(c)) )
    L   = alpha * KL + (1 - alpha) * CrossEntropy(z_s, y)

``alpha = 1`` (the default) is ReActNet's pure distributional loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["kl_div_logits", "DistillationLoss", "freeze_teacher"]


def kl_div_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T**2 * mean_batch KL(softmax(t/T) || softmax(s/T))`` computed in float32."""
    T = float(temperature)
    log_ps = F.log_softmax(student_logits.float() / T, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach().float() / T, dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return kl * (T * T)


class DistillationLoss(nn.Module):
    """``alpha * kl_div_logits(s, t, T) + (1 - alpha) * CE(s, y)``."""

    def __init__(self, alpha: float = 1.0, temperature: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {alpha}")
        if float(temperature) <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.alpha * kl_div_logits(student_logits, teacher_logits, self.temperature)
        if self.alpha < 1.0:
            ce = F.cross_entropy(student_logits.float(), target, label_smoothing=self.label_smoothing)
            loss = loss + (1.0 - self.alpha) * ce
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put ``teacher`` in eval mode with ``requires_grad=False`` everywhere (returned for chaining)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
