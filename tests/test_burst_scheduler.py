"""The burst scheduler end to end: start when allowed, gate the result, pre-empt on refusal."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.calibrate.burst_scheduler import BurstScheduler, SchedulerConfig
from edge_agent.data import load_dataset
from edge_agent.energy import EnergyDecision
from edge_agent.energy_sources import EnergyReadings
from edge_agent.engine.engine import Engine

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "edge_agent/defaults/basicmotions.eab"
ALLOW = EnergyDecision(True, 2, False, ("bursts allowed",), EnergyReadings())
REFUSE = EnergyDecision(
    False, 2, True, ("no burst: battery 10% < 50% on battery",), EnergyReadings()
)


def _until_idle(sched: BurstScheduler, decision: EnergyDecision, *args: object) -> list:
    returned = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        out = sched.tick(decision, *args)  # type: ignore[arg-type]
        if out is not None:
            returned.append(out)
        if sched.state == "idle":
            return returned
        time.sleep(0.05)
    raise AssertionError(f"scheduler stuck in {sched.state}")


def _until_started(sched: BurstScheduler, decision: EnergyDecision, *args: object) -> None:
    """Tick until the worker has gathered the pool and spawned the burst (or declined)."""
    deadline = time.monotonic() + 60
    while sched.state == "starting":
        assert time.monotonic() < deadline, "the burst never started"
        time.sleep(0.02)
    assert sched.tick(decision, *args) is None  # collects the start


def test_scheduler_runs_gates_and_preempts(tmp_path: Path) -> None:
    bundle = load_bundle(DEFAULT_BUNDLE)
    ds = load_dataset("basicmotions")
    engine = Engine(bundle, bits=2)
    X = np.concatenate([ds.X_train, ds.X_test])
    targets = np.concatenate([ds.y_train, ds.y_test])
    labelled = np.concatenate([np.ones(40, bool), np.zeros(40, bool)])  # half unlabelled

    def current(x: np.ndarray) -> np.ndarray:
        return engine.predict(x)[0]

    cfg = SchedulerConfig(
        interval_s=0.0, min_pool=32, gate_min_samples=4, burst=BurstConfig(steps=3, clc="none")
    )
    sched = BurstScheduler(tmp_path / "work", cfg)
    args = (bundle, current, lambda: (X, targets, labelled))
    small = lambda: (X[:10], targets[:10], labelled[:10])  # noqa: E731
    assert sched.tick(ALLOW, bundle, current, small) is None  # the worker gathers the pool
    _until_started(sched, ALLOW, bundle, current, small)
    assert sched.state == "idle" and sched.status()["started"] == 0  # pool too small

    assert sched.tick(ALLOW, *args) is None and sched.state in ("starting", "running")
    _until_started(sched, ALLOW, *args)
    assert sched.state == "running"
    accepted = _until_idle(sched, ALLOW, *args)
    status = sched.status()
    assert status["started"] == 1 and status["accepted"] + status["rolled_back"] == 1
    assert status["last"]["state"] == "done" and status["last"]["gate"]["metric"] == "fp_agreement"
    assert status["last"]["bits"] == 2 and status["cpu_s_total"] > 0
    if accepted:
        assert accepted[0].engine.bits == 2 and accepted[0].bundle is not None

    sched.tick(ALLOW, *args)
    _until_started(sched, ALLOW, *args)
    assert sched.state == "running"
    time.sleep(1.0)
    _until_idle(sched, REFUSE, *args)
    status = sched.status()
    assert status["preempted"] == 1 and status["last"]["state"] == "preempted"
    assert "battery 10%" in status["last"]["reason"]
    sched.tick(REFUSE, *args)
    assert sched.state == "idle"  # refused: nothing starts
    sched.close()
