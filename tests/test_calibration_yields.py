"""The agent's calibration thread starts no job while inference is behind."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from test_service_support import cleanup, short_dir

from edge_agent.data import load_dataset
from edge_agent.ingest.intake import Item
from edge_agent.ingest.protocol import decode_ingest, encode_sample
from edge_agent.service.agent import CALIBRATION_POLL_S, Agent
from edge_agent.service.config import local_config_text, parse_config

BUNDLE = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


def test_calibration_waits_while_more_than_a_batch_is_queued() -> None:
    d = short_dir()
    agent = Agent(parse_config(local_config_text(d, BUNDLE, '[log]\nlevel = "warning"\n')))
    agent.start()  # its threads run; the inference loop (run) does not: the queue stays
    try:
        ctl = agent.calibration
        assert ctl is not None
        X = load_dataset("basicmotions").X_test.astype(np.float32)
        eng = agent.model.engine
        backlog = agent.cfg.inference.batch_max + 1
        items = []
        for i in range(backlog):
            msg = decode_ingest(
                encode_sample("s", i, X[i % len(X)], 0.0),
                tuple(eng.input_shape),
                eng.num_classes,
                1 << 20,
            )
            items.append((Item(msg, time.perf_counter()), False))  # type: ignore[arg-type]
        agent.queue.put_many(items)
        # labelled samples: every one joins a chunk, so one chunk makes a job due
        n = ctl.cfg.chunk
        labels: list[int | None] = [i % eng.num_classes for i in range(n)]
        ctl.observe_many(eng.prepare(X[:n]), labels, list(range(n)))
        assert ctl.due()
        time.sleep(4 * CALIBRATION_POLL_S)
        assert ctl.due()  # behind: the job waits
        agent.queue.get_batch(backlog, 0)  # inference caught up
        deadline = time.monotonic() + 30
        while ctl.due() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ctl.due()
    finally:
        agent.request_stop()
        agent.shutdown()
        cleanup(d)
