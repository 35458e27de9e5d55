"""A short soak (bench/soak.py with 20,000 samples): labels and calibration on at a steady
rate through the real agent; the counters add up exactly, no thread dies, the open file
descriptors stay flat and no storage write failed."""

from __future__ import annotations

from bench.soak import soak

SAMPLES = 20_000


def test_short_soak_counts_exactly_and_leaks_no_descriptors() -> None:
    r = soak(SAMPLES, 2000.0, 4, every_s=1.0, checkpoint_s=1.0, drift_period=10_000)
    assert r["sent"] == SAMPLES
    assert r["counters_exact"], r
    assert r["predicted"] + sum(r["dropped"].values()) + sum(r["rejected"].values()) == SAMPLES
    assert not r["rejected"], r["rejected"]
    assert not r["thread_died"] and r["threads"] and all(r["threads"].values()), r["threads"]
    assert r["calibrations"] > 0 and r["checkpoints"] > 0, r
    assert not any(r["storage_errors"].values()), r["storage_errors"]
    # descriptors: flat once warm (a checkpoint or log rotation may hold one more briefly)
    warm = [p["fds"] for p in r["series"] if p["predicted"] >= SAMPLES // 5]
    assert warm and max(warm) - min(warm) <= 2, r["series"]
