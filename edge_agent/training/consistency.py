"""Consistency regularization for QAT bursts (docs/method.md section 8, the CR paper).

The student is the quantized model being trained; the teacher is its exponential moving
average ``theta' <- m * theta' + (1 - m) * theta``. For two augmented views of a sample the
loss ``lambda(t) * KL(teacher(a2(x)) || student(a1(x)))`` needs no label, so unlabelled
stream samples contribute. ``lambda`` ramps up as ``lambda_max * exp(-5 (1 - t / T_r)^2)``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.training.augment import augment


class EMATeacher:
    """An exponential moving average of a model's parameters and buffers."""

    def __init__(self, student: nn.Module, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """``theta' <- m * theta' + (1 - m) * theta`` for every parameter; buffers copied."""
        m = self.momentum
        for tp, sp in zip(self.model.parameters(), student.parameters(), strict=True):
            tp.mul_(m).add_(sp.detach(), alpha=1 - m)
        for tb, sb in zip(self.model.buffers(), student.buffers(), strict=True):
            tb.copy_(sb)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def ramp_up(step: int, ramp_steps: int, lambda_max: float) -> float:
    """Sigmoid-shaped ramp ``lambda_max * exp(-5 (1 - t / T_r)^2)``, flat after ``T_r``."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return lambda_max
    t = max(step, 0) / ramp_steps
    return lambda_max * math.exp(-5.0 * (1.0 - t) ** 2)


def consistency_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T))``, batch mean, scaled by T^2."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, 1),
            F.log_softmax(teacher_logits.detach() / t, 1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


def two_views(
    x: torch.Tensor, gen: torch.Generator, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of a normalized batch (sensor or image, by rank)."""
    return augment(x, gen, strength), augment(x, gen, strength)
