"""The running agent routes its own predictions: after a drift it adapted to, clean and
drifted samples go to their domains (counted in status), and a restart restores the
bank from the saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_service_support import AgentProcess, cleanup, short_dir, write_config

from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate import stats_rung as sr
from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"
CALIBRATION = """
[calibration]
episode_rounds = 0
min_holdout = 2
"""


def _domains(st: dict) -> dict[str, int]:
    return {d["name"]: d["samples"] for d in st["calibration"]["routing"]["domains"]}


def test_agent_routes_its_predictions_and_restores_its_bank(tmp_path: Path) -> None:
    ds = load_dataset("basicmotions")
    bundle = tmp_path / "bm.eab"
    save_bundle(sr.with_statistics(load_bundle(DEFAULT), ds.X_train, ds.y_train), bundle)
    d = short_dir()
    config = write_config(d, bundle, extra=CALIBRATION, checkpoint_s=0.5)
    agent = AgentProcess(config)
    gain = Drift.parse("gain:0.3@0")

    def drift(x: np.ndarray) -> np.ndarray:
        return gain.apply_stream(x[None])[0]

    try:
        agent.wait_ready()
        assert _domains(agent.status()) == {"base": 0}  # nothing adapted: not routed
        with Publisher(agent.status()["endpoints"]["ingest"][0]) as pub:
            replay(pub, stream(ds.X_test, ds.y_test, 200, seed=1, drift=drift, labels_every=2), 500)
            st = agent.wait_for(lambda s: s["calibration"]["stats_rounds_kept"] >= 1, timeout=120)
            assert list(_domains(st)) == ["base", "d1"]
            st = agent.wait_for(lambda s: sum(_domains(s).values()) >= 200)
            first = _domains(st)  # before the correction every sample ran on the base
            replay(pub, stream(ds.X_test, ds.y_test, 40, seed=2), 500, first_seq=1000)
            replay(pub, stream(ds.X_test, ds.y_test, 40, seed=3, drift=drift), 500, first_seq=2000)
        st = agent.wait_for(lambda s: sum(_domains(s).values()) >= 280, timeout=60)
        counts = _domains(st)
        assert sum(counts.values()) == 280, counts
        assert counts["base"] - first["base"] >= 30 and counts["d1"] - first["d1"] >= 30, counts
        agent.wait_for(lambda s: s["checkpoint"].get("generation", 0) >= 2)
        rc, _ = agent.terminate()
        assert rc == 0
        again = AgentProcess(config)
        again.wait_ready()
        routing = again.status()["calibration"]["routing"]
        assert routing["reason"] == "restored: 2 domains", routing
        assert [r["name"] for r in routing["domains"]] == ["base", "d1"]
        again.terminate()
    finally:
        agent.stop()
        cleanup(d)
