"""Training's schedule: early stopping on a validation split of a large training split,
torch threads, and the time-per-phase report."""

from __future__ import annotations

import time

import pytest
import torch

from edge_agent.data import load_dataset
from edge_agent.training.arch import default_spec
from edge_agent.training.fit import (
    EarlyStop,
    TrainConfig,
    fit,
    torch_threads,
)
from edge_agent.training.phases import PhaseTimer


@pytest.mark.parametrize(
    "bad",
    [{"fp_steps": 0}, {"qat_steps": -1}, {"torch_threads": 0}, {"val_fraction": 1.0}],
)
def test_bad_schedule_values_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TrainConfig(**bad)  # type: ignore[arg-type]


def test_early_stop_keeps_the_best_weights_and_stops_after_patience() -> None:
    model = torch.nn.Linear(2, 2)
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    stop = EarlyStop(x, y, every=2, patience=2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2) * 5)  # good
        model.bias.zero_()
    assert not stop.check(model, 1)  # not a checking step
    assert not stop.check(model, 2) and stop.best_step == 2
    best = model.weight.clone()
    with torch.no_grad():
        model.weight.copy_(-torch.eye(2))  # worse from now on
    assert not stop.check(model, 4)
    assert stop.check(model, 6)  # second check without improvement
    stop.restore(model)
    assert torch.equal(model.weight, best)


def test_a_large_training_split_stops_early_on_its_validation_split() -> None:
    ds = load_dataset("digits")  # 1258 training samples: a validation split
    cfg = TrainConfig(
        fp_steps=600,
        qat_steps=300,
        eval_every=10,
        patience=2,
        progress=False,
        augment=False,
        early_stop_min_samples=300,
    )
    assert cfg.early_stopping(len(ds.X_train))
    assert not TrainConfig().early_stopping(len(ds.X_train))  # off by default
    timer = PhaseTimer()
    calls: list[int] = []
    _, _, metrics = fit(
        ds,
        default_spec(ds.input_shape, ds.num_classes, 8),
        [4],
        0,
        cfg,
        on_snapshot=lambda step, _net: calls.append(step),
        snapshot_every=10,
        timer=timer,
    )
    assert 0 < len(calls) < 60  # stopped before the 600 planned steps
    assert metrics["fp_test_accuracy"] > 0.8 and metrics["q4_test_accuracy"] > 0.8
    assert set(timer.phases) == {"FP training", "QCore snapshots", "QAT 4-bit"}


def test_torch_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_phase_timer_reports_exclusive_times_that_add_up() -> None:
    timer = PhaseTimer()

    def spin(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    with timer.phase("outer"):
        spin(0.05)
        with timer.phase("inner"):
            spin(0.1)
        with timer.phase("inner"):
            spin(0.1)
    inner, outer = timer.phases["inner"], timer.phases["outer"]
    assert inner.calls == 2 and inner.cpu_s >= 0.2
    assert 0.04 <= outer.cpu_s < 0.15  # the inner phases are not counted twice
    lines = timer.report()
    assert [ln.split()[0] for ln in lines] == ["outer", "inner", "total"]
    assert timer.total().cpu_s == pytest.approx(inner.cpu_s + outer.cpu_s)
