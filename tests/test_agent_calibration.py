"""The running agent recalibrates by itself: QCore updates and gated flip rounds from the
stream, shown in status, persisted across a restart."""

from __future__ import annotations

from pathlib import Path

from test_service_support import AgentProcess, cleanup, short_dir, write_config

from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift

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
