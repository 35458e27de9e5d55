"""Consistency regularization: EMA update, ramp-up, KL consistency, two views."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edge_agent.training.consistency import EMATeacher, consistency_loss, ramp_up, two_views


def test_ema_update_follows_the_formula() -> None:
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    ema = EMATeacher(student, momentum=0.9)
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema.update(student)
    for t, s, b in zip(ema.model.parameters(), student.parameters(), before, strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)
        assert not t.requires_grad
    ema.update(student)  # a second step moves further towards the student
    for t, s, b in zip(ema.model.parameters(), student.parameters(), before, strict=True):
        assert torch.allclose(t, 0.81 * b + 0.19 * s, atol=1e-6)


def test_ema_rejects_bad_momentum() -> None:
    with pytest.raises(ValueError):
        EMATeacher(nn.Linear(2, 2), momentum=1.0)


def test_ramp_up() -> None:
    assert ramp_up(0, 10, 2.0) == pytest.approx(2.0 * math.exp(-5))
    assert ramp_up(5, 10, 2.0) == pytest.approx(2.0 * math.exp(-1.25))
    assert ramp_up(10, 10, 2.0) == 2.0 and ramp_up(50, 10, 2.0) == 2.0
    assert ramp_up(3, 0, 2.0) == 2.0


def test_consistency_loss_zero_for_agreement_and_no_teacher_gradient() -> None:
    logits = torch.randn(4, 3)
    assert float(consistency_loss(logits, logits.clone())) == pytest.approx(0.0, abs=1e-7)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    loss = consistency_loss(student, teacher, temperature=2.0)
    assert float(loss.detach()) > 0
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_two_views_differ_and_keep_shape() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in ((4, 6, 50), (4, 1, 8, 8)):
        x = torch.randn(*shape)
        a, b = two_views(x, gen)
        assert a.shape == x.shape and b.shape == x.shape
        assert not torch.allclose(a, b)
