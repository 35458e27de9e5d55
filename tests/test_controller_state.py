"""The checkpoint's and status' view of the QCore buffer never waits long for a buffer update in
flight: the calibration thread runs niced, and on a busy board one update can hold the
buffer for seconds (a stop under load then outlasted systemd's TimeoutStopSec)."""

from __future__ import annotations

import threading
import time

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.cli.demo import DEFAULT_BUNDLE
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine


def test_state_during_a_buffer_update_is_the_last_one_taken() -> None:
    bundle = load_bundle(str(DEFAULT_BUNDLE))
    ctl = CalibrationController(bundle, CalibrationConfig())
    first = ctl.state()
    shown = ctl.stats()["buffer"]
    held, release = threading.Event(), threading.Event()

    def update_in_flight() -> None:
        with ctl._buffer_lock:  # what _update_buffer holds while it predicts
            held.set()
            release.wait(5)

    t = threading.Thread(target=update_in_flight)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    stale = ctl.state(wait=0.05)
    assert time.monotonic() - t0 < 1.0
    assert stale is first and ctl.counts["buffer_reads_stale"] == 1
    t0 = time.monotonic()
    assert ctl.stats()["buffer"] is shown  # status does not wait for it either
    assert time.monotonic() - t0 < 1.0 and ctl.counts["buffer_reads_stale"] == 2
    release.set()
    t.join()
    # with the buffer free again a new state is taken, and it holds what the stream added
    ds = load_dataset("basicmotions")
    eng = Engine(bundle, bits=4)
    for i in range(200):
        ctl.observe(ds.X_test[i % len(ds.X_test)], int(ds.y_test[i % len(ds.y_test)]), i)
        while ctl.due():
            ctl.run(eng)
    fresh = ctl.state(wait=0.05)
    assert fresh is not first and ctl.counts["buffer_reads_stale"] == 2
    assert fresh != first
