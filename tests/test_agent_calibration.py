"""The running agent recalibrates by itself: QCore updates and gated flip rounds from the
stream, shown in status, persisted across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_service_support import AgentProcess, cleanup, short_dir, write_config

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

CALIBRATION = """
[calibration]
chunk = 16
min_holdout = 2
"""


def test_agent_calibrates_on_a_drifted_stream_and_keeps_its_buffer(
    basicmotions_bundle: Path,
) -> None:
    d = short_dir()
    config = write_config(d, basicmotions_bundle, extra=CALIBRATION, checkpoint_s=0.5)
    agent = AgentProcess(config)
    try:
        agent.wait_ready()
        st = agent.status()
        assert st["calibration"]["method"] == "network"
        assert st["calibration"]["buffer"]["size"] == 12  # the bundle's QCore: 3 per class
        ds = load_dataset("basicmotions")
        X = Drift.parse("rotation@0").apply_stream(ds.X_test)
        items = list(stream(X, ds.y_test, 64, seed=3, labels_every=1))
        with Publisher(st["endpoints"]["ingest"][0]) as pub:
            replay(pub, iter(items), rate=2000, sensor="cal")
        st = agent.wait_for(lambda s: s["calibration"]["done"] >= 4, timeout=120)
        cal = st["calibration"]
        assert cal["accepted"] + cal["rolled_back"] == cal["done"]
        assert cal["errors"] == 0
        assert cal["last_round"]["method"] == "network"
        assert cal["buffer"]["stream_fraction"] > 0  # drifted samples won places
        size = cal["buffer"]["size"]
        version = st["model"]["version"]
        agent.wait_for(lambda s: s["checkpoint"].get("generation", 0) >= 2)
        rc, _ = agent.terminate()
        assert rc == 0
        # recovery, not just rounds: the saved model classifies the drifted data better
        # than the bundle it started from (the bundle: 0.80 here; rounds that were all
        # rolled back would leave it there)
        before = float(np.mean(Engine(load_bundle(basicmotions_bundle)).predict(X)[0] == ds.y_test))
        saved = load_bundle(d / "state" / "model.eab")
        assert saved.model_version == version != load_bundle(basicmotions_bundle).model_version
        after = float(np.mean(Engine(saved).predict(X)[0] == ds.y_test))
        assert cal["accepted"] >= 1 and after > before, (before, after, cal)

        again = AgentProcess(config)
        again.wait_ready()
        st2 = again.status()
        assert st2["calibration"]["buffer"]["size"] == size
        assert st2["calibration"]["buffer"]["stream_fraction"] > 0
        assert st2["model"]["version"] == version  # an accepted round survives the restart
        assert "QCore buffer restored" in again.log()
        again.terminate()
    finally:
        agent.stop()
        cleanup(d)


BURSTS = """
[calibration]
chunk = 16
min_holdout = 2

[energy]
vcgencmd = ""
burst_min_battery_percent = false
burst_max_temp_c = false
burst_max_load_per_cpu = false

[bursts]
enabled = true
energy_poll_s = 0.5

[bursts.scheduler]
interval_s = 1.0
min_pool = 16
gate_min_samples = 2

[bursts.scheduler.burst]
steps = 10
"""


def test_agent_runs_a_qat_burst_when_the_energy_policy_allows(basicmotions_bundle: Path) -> None:
    d = short_dir()
    agent = AgentProcess(write_config(d, basicmotions_bundle, extra=BURSTS))
    try:
        agent.wait_ready()
        st = agent.wait_for(lambda s: s["energy"] is not None, timeout=60)
        assert st["energy"]["burst_allowed"], st["energy"]
        ds = load_dataset("basicmotions")
        items = list(
            stream(
                Drift.parse("offset@0").apply_stream(ds.X_test),
                ds.y_test,
                48,
                seed=4,
                labels_every=1,
            )
        )
        with Publisher(st["endpoints"]["ingest"][0]) as pub:
            replay(pub, iter(items), rate=2000, sensor="burst")
        st = agent.wait_for(
            lambda s: s["bursts"]["accepted"] + s["bursts"]["rolled_back"] >= 1, timeout=300
        )
        b = st["bursts"]
        assert b["started"] >= 1 and b["failed"] == 0, b
        assert b["last"]["state"] == "done" and "gate" in b["last"], b
        assert 0 < b["cpu_s_total"] < 60
        rc, _ = agent.terminate()
        assert rc == 0
    finally:
        agent.stop()
        cleanup(d)


@pytest.mark.parametrize("window", [0, 8])
def test_rounds_are_checked_on_the_latest_labelled_samples(
    basicmotions_bundle: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    cfg = CalibrationConfig(chunk=16, recent_labelled=window, trigger="samples")
    ctl = CalibrationController(bundle, cfg)
    seen: list[Any] = []
    run_round = ctl.calibrator.run_round

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["recent"])
        return run_round(*args, **kwargs)

    monkeypatch.setattr(ctl.calibrator, "run_round", spy)
    ds = load_dataset("basicmotions")
    engine = Engine(bundle)
    for i in range(32):  # two chunks of 16 labelled samples
        ctl.observe(ds.X_test[i], int(ds.y_test[i]), i)
        if ctl.due():
            ctl.run(engine)
    if window == 0:
        assert seen == [None, None]
        return
    sizes = [len(r[1]) for r in seen]
    assert sizes == [8, 8]  # the window keeps the latest 8, this chunk's included
    X, y = seen[1]
    np.testing.assert_array_equal(y, ds.y_test[24:32])
    np.testing.assert_array_equal(X, ds.X_test[24:32])
