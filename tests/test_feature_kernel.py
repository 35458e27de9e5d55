"""The compiled drift-feature statistics give numpy's bits (the drift signal's decisions
depend on them; the agent's and a replay's must agree whatever computed them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.calibrate.drift_reference import sample_features
from edge_agent.calibrate.feature_kernel import MAX_ROW, channel_stats


def _numpy_stats(a: np.ndarray) -> np.ndarray:
    """What sample_features computed before the kernel: numpy's own reductions."""
    out = np.zeros((3, *a.shape[:2]))
    out[0] = a.mean(axis=2, dtype=np.float64)
    out[1] = a.std(axis=2, dtype=np.float64)
    if a.shape[2] > 1:
        out[2] = np.abs(np.diff(a, axis=2)).mean(axis=2, dtype=np.float64)
    return out


@pytest.mark.parametrize("t", [1, 2, 7, 8, 9, 15, 16, 17, 64, 100, 127, MAX_ROW])
def test_channel_stats_are_numpys_bit_for_bit(t: int) -> None:
    rng = np.random.default_rng(t)
    for n in (1, 3, 200):
        scale, offset = rng.uniform(0.01, 100), rng.normal() * rng.uniform(0, 1000)
        a = (rng.normal(size=(n, 6, t)) * scale + offset).astype(np.float32)
        got = np.zeros((3, n, 6))
        channel_stats(a, got)
        np.testing.assert_array_equal(got, _numpy_stats(a))


def test_sample_features_by_hand() -> None:
    # one channel 0, 1, 3, 6: mean 2.5; deviations -2.5, -1.5, 0.5, 3.5 -> variance
    # 21 / 4; differences 1, 2, 3 -> mean 2
    f = sample_features(np.array([[[0.0, 1.0, 3.0, 6.0]]], np.float32))
    assert f.shape == (1, 3)
    assert f[0, 0] == 2.5
    assert f[0, 1] == math.log(math.sqrt(21 / 4) + 1e-6)
    assert f[0, 2] == math.log(2 + 1e-6)


def test_long_rows_go_to_numpy() -> None:
    a = np.random.default_rng(0).normal(size=(5, 2, MAX_ROW + 50)).astype(np.float32)
    s = _numpy_stats(a)
    want = np.concatenate([s[0], np.log(s[1] + 1e-6), np.log(s[2] + 1e-6)], axis=1)
    np.testing.assert_array_equal(sample_features(a), want)
