"""The statistics rung's channel signs: a sensor worn the other way round (some channels
negated, as a watch on the other wrist) is found from channel correlations alone and
turned back by a negative scale in the input normalization, exactly on the engine's grid;
the injected kinds that do not mirror flip nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate import stats_rung as sr
from edge_agent.calibrate.stats_signs import channel_signs, input_corr
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine import reference
from edge_agent.engine.engine import Engine

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"
MIRROR = [0, 4, 5]  # acceleration x, rotation y and z: the other wrist


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    """The demo bundle with the statistics training records (input correlations too)."""
    ds = load_dataset("basicmotions")
    return sr.with_statistics(load_bundle(DEFAULT), ds.X_train, ds.y_train)


def _mirrored(X: np.ndarray, channels: list[int]) -> np.ndarray:
    s = np.ones(X.shape[1], np.float32)
    s[channels] = -1.0
    return X * s[None, :, None]


def test_signs_find_mirrored_channels_and_no_injected_kind() -> None:
    ds = load_dataset("basicmotions")
    m, s = sr.channel_stats(ds.X_train)
    corr = input_corr(ds.X_train)
    for flipped in (MIRROR, [2, 3]):
        want = np.ones(6)
        want[flipped] = -1.0
        got = channel_signs(corr, m, s, _mirrored(ds.X_test, flipped))
        np.testing.assert_array_equal(got, want)
    for kind in ("gain", "offset", "noise", "dropout", "rotation", "timewarp"):
        X = Drift.parse(f"{kind}@0").apply_stream(ds.X_test)
        np.testing.assert_array_equal(channel_signs(corr, m, s, X), np.ones(6), kind)
    np.testing.assert_array_equal(channel_signs(corr[:1, :1], m[:1], s[:1], ds.X_test[:, :1]), [1])


def test_channels_that_are_not_correlated_flip_nothing() -> None:
    """Independent slow AR(1) channels: their sample correlations are noise, and disagree
    with another draw's on balance about half the time; that is no evidence for a flip."""
    rng = np.random.default_rng(0)

    def series(n: int, phi: float = 0.98) -> np.ndarray:
        e = rng.standard_normal((n, 6, 100))
        x = np.zeros_like(e)
        x[..., 0] = e[..., 0] / np.sqrt(1 - phi * phi)
        for t in range(1, 100):
            x[..., t] = phi * x[..., t - 1] + e[..., t]
        return x.astype(np.float32)

    for _ in range(100):
        train = series(60)
        m, s = sr.channel_stats(train)
        np.testing.assert_array_equal(
            channel_signs(input_corr(train), m, s, series(64)), np.ones(6)
        )


def test_a_mirrored_stream_is_turned_back_exactly(bundle: Bundle, tmp_path: Path) -> None:
    """Negative scales exactly where the channels flipped; the engine equals the numpy
    reference bit for bit with them, as does a restart from the saved bundle; held-out
    accuracy comes back, which the rung without signs does not bring."""
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None and stats.in_corr is not None
    ds = load_dataset("basicmotions")
    X = _mirrored(ds.X_test, MIRROR)
    stream, held = np.arange(0, 40, 2), np.arange(1, 40, 2)
    scratch = Engine(bundle, bits=4, scratch=True)
    corr = sr.propose(scratch, bundle, stats, X[stream])
    np.testing.assert_array_equal(np.flatnonzero(corr.std < 0), MIRROR)
    fixed = sr.corrected_bundle(bundle, corr)
    ref = reference.forward(bundle.arch["layers"], fixed.quant[4], corr.mean, corr.std, X)
    np.testing.assert_array_equal(scratch.predict_logits(X), ref)
    save_bundle(fixed, tmp_path / "fixed.eab")
    np.testing.assert_array_equal(
        Engine(load_bundle(tmp_path / "fixed.eab"), 4).predict_logits(X), ref
    )
    unsigned = Engine(bundle, bits=4, scratch=True)
    sr.propose(unsigned, bundle, dataclasses.replace(stats, in_corr=None), X[stream])
    acc = [float((e.predict(X[held])[0] == ds.y_test[held]).mean()) for e in (scratch, unsigned)]
    assert acc[0] >= acc[1] + 0.1, acc
