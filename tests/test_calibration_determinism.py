"""Sample-driven calibration: the same stream gives the same models whenever the
calibration thread gets to its jobs (in process, and two agent processes, one of them
beside a CPU hog); when it falls too far behind, rounds are skipped by the documented
rule and counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from test_service_support import AgentProcess, cleanup, short_dir, write_config

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.calibrate.flip_round import FlipConfig
from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"
CFG = CalibrationConfig(
    chunk=16, flip=FlipConfig(min_holdout=2), episode_rounds=3, stats_min_samples=32, max_backlog=8
)


def _stream(n: int = 360, drift: str = "gain:0.4@100") -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("basicmotions")
    idx = np.random.default_rng(7).integers(0, len(ds.X_test), n)
    return Drift.parse(drift).apply_stream(ds.X_test[idx]), ds.y_test[idx]


def _replay(bundle: Bundle, cfg: CalibrationConfig, lag: int) -> tuple[list[str], dict[str, int]]:
    """Feed the stream; run due jobs at once (lag 0) or only every ``lag`` samples."""
    X, y = _stream()
    ctl = CalibrationController(bundle, cfg)
    eng = Engine(bundle)
    versions = [eng.model_version]
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 2 == 0 else None, i)
        if lag == 0 or i % lag == lag - 1:
            while ctl.due():
                ctl.run(eng)
                if eng.model_version != versions[-1]:
                    versions.append(eng.model_version)
    while ctl.due():
        ctl.run(eng)
        if eng.model_version != versions[-1]:
            versions.append(eng.model_version)
    return versions, dict(ctl.counts)


def test_same_models_whenever_the_jobs_run() -> None:
    bundle = load_bundle(DEFAULT)
    now, counts = _replay(bundle, CFG, 0)
    late, late_counts = _replay(bundle, CFG, 100)
    assert counts["drift_alarms"] == 1 and counts.get("stats_rounds_kept", 0) == 1, counts
    assert len(now) >= 2  # the drift changed the model
    assert late == now and late_counts == counts


def test_a_calibration_thread_that_falls_behind_skips_rounds_and_counts_them() -> None:
    bundle = load_bundle(DEFAULT)
    cfg = CalibrationConfig(
        chunk=8,
        flip=FlipConfig(min_holdout=2),
        episode_rounds=6,
        stats_min_samples=32,
        stats_rounds=1,
        max_backlog=1,
    )
    _, counts = _replay(bundle, cfg, 300)
    rounds = sum(v for k, v in counts.items() if k.endswith(("_kept", "_rolled_back")))
    assert counts["rounds_skipped"] >= 1
    # one statistics round, six flip rounds, two label rounds (180 labels, one per 64)
    assert rounds + counts["rounds_skipped"] == 9


def test_no_rounds_without_drift() -> None:
    ds = load_dataset("basicmotions")
    bundle = load_bundle(DEFAULT)
    ctl = CalibrationController(bundle, CalibrationConfig(chunk=16, flip=FlipConfig(min_holdout=2)))
    eng = Engine(bundle)
    idx = np.random.default_rng(8).integers(0, len(ds.X_test), 2000)
    results = []
    for n, i in enumerate(idx):
        ctl.observe(ds.X_test[i], int(ds.y_test[i]) if n % 3 == 0 else None, n)
        while ctl.due():
            results.append(ctl.run(eng))
    # buffer updates, and label rounds (every 64 labels, alarm or not) that keep nothing
    assert results and all(r is None or (r.rung == "label" and not r.version) for r in results)
    assert ctl.counts["drift_alarms"] == 0 and ctl.counts["label_rounds_kept"] == 0
    assert ctl.counts["label_rounds_rolled_back"] == 2000 // 3 // 64


AGENT = """
[calibration]
chunk = 16
min_holdout = 2
episode_rounds = 3
stats_min_samples = 32
max_backlog = 8
label_every = 0  # the counts below are the statistics and flip rounds' (label rounds: _replay)
"""


def _agent_run(bundle: Path, hog: bool) -> dict[str, object]:
    d = short_dir()
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3 if hog else 0)
    ]
    agent = AgentProcess(write_config(d, bundle, extra=AGENT))
    try:
        agent.wait_ready()
        st = agent.status()
        ds = load_dataset("basicmotions")
        n = 360
        items = list(
            stream(
                ds.X_test,
                ds.y_test,
                n,
                seed=7,
                drift=Drift.parse("gain:0.4@100").transform(),
                drift_start=100,
                labels_every=2,
            )
        )
        with Publisher(st["endpoints"]["ingest"][0]) as pub:
            replay(pub, iter(items), rate=400, sensor="det")

        def settled(s: dict[str, object]) -> bool:
            c = s["calibration"]
            assert isinstance(c, dict)
            return (
                s["samples"]["predicted"] == n  # type: ignore[index]
                and c["jobs_waiting"] == 0
                and c["busy"] is False  # no job in flight either
                and c["episode"] is not None
                and c["episode"]["flip_rounds_left"] == 0
                and c["done"] == 4
            )

        st = agent.wait_for(settled, timeout=240)
        agent.terminate()
        cal = st["calibration"]
        return {
            "version": st["model"]["version"],
            **{
                k: cal[k]
                for k in (
                    "stats_rounds_kept",
                    "stats_rounds_rolled_back",
                    "flip_rounds_kept",
                    "flip_rounds_rolled_back",
                    "rounds_skipped",
                    "drift_alarms",
                )
            },
        }
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        agent.stop()
        cleanup(d)


def test_two_agent_runs_one_beside_a_cpu_hog_give_the_same_model() -> None:
    quiet = _agent_run(DEFAULT, hog=False)
    loaded = _agent_run(DEFAULT, hog=True)
    assert quiet["drift_alarms"] == 1 and quiet["rounds_skipped"] == 0, quiet
    assert loaded == quiet


def test_bursts_wait_for_a_drift_alarm() -> None:
    bundle = load_bundle(DEFAULT)
    ctl = CalibrationController(bundle, CFG)
    X, y = _stream()
    for i in range(100):
        ctl.observe(X[i], int(y[i]), i)
    assert not ctl.burst_wanted()  # no drift yet
    for i in range(100, 160):
        ctl.observe(X[i], int(y[i]), i)
    assert ctl.counts["drift_alarms"] == 1 and ctl.burst_wanted()
    ctl.burst_started()
    assert not ctl.burst_wanted()  # the next burst needs the next alarm
    again = CalibrationController(bundle, CFG)
    again.carry_from(ctl)  # a burst replaced the model: the signal and counts go on
    assert again.drift is ctl.drift and not again.burst_wanted()
    assert CalibrationController(bundle, CalibrationConfig(trigger="samples")).burst_wanted()
