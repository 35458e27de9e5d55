"""The prediction rate is over the time the stream has run, not a fixed window."""

from __future__ import annotations

import time

from edge_agent.service.metrics import Metrics


def _stream(m: Metrics, per_batch: int, batches: int, gap_s: float) -> float:
    t0 = time.monotonic()
    for _ in range(batches):
        m.record_batch(per_batch, 0.1, [1.0] * per_batch)
        time.sleep(gap_s)
    return per_batch * (batches - 1) / (time.monotonic() - t0 - gap_s)


def test_a_young_stream_on_an_old_agent_reads_its_real_rate() -> None:
    m = Metrics()
    m.started -= 60.0  # the agent has been up a minute; the stream starts now
    actual = _stream(m, per_batch=3, batches=20, gap_s=0.01)  # ~300/s for ~0.2 s
    rate = m.snapshot()["prediction_rate_per_s"]
    assert 0.7 * actual <= rate <= 1.3 * actual, (rate, actual)


def test_a_stopped_stream_decays_to_zero() -> None:
    m = Metrics()
    _stream(m, per_batch=3, batches=5, gap_s=0.01)
    before = m.snapshot()["prediction_rate_per_s"]
    time.sleep(0.3)
    assert m.snapshot()["prediction_rate_per_s"] < before
    assert Metrics().snapshot()["prediction_rate_per_s"] == 0.0


def test_batches_are_counted_beside_predictions() -> None:
    m = Metrics()
    _stream(m, per_batch=3, batches=4, gap_s=0.0)
    m.record_batch(5, 0.1, [1.0] * 5)
    c = m.snapshot()["counters"]
    assert (c["predicted"], c["inference_batches"]) == (17, 5)  # mean batch 3.4
