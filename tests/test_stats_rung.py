"""The statistics rung: its integer corrections are exact on the engine's grid (the
engine equals the numpy reference bit for bit with them, and every corrected mean
accumulator is within half a step of its training value), it restores held-out accuracy
under a gain drift, and bundles without statistics still load and run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate import stats_rung as sr
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine import reference
from edge_agent.engine.engine import Engine

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(DEFAULT)


def _live(bundle: Bundle, bits: int) -> tuple[Engine, Engine]:
    eng = Engine(bundle, bits=bits)
    scratch = Engine(bundle, bits=bits, scratch=True)
    sr.sync(scratch, eng, sr.hidden_layers(bundle))
    return eng, scratch


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_correction_is_exact_on_the_engine_grid(bundle: Bundle, bits: int) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None and stats.source == "bundle"
    ds = load_dataset("basicmotions")
    X = Drift.parse("gain:2.5@0").apply_stream(ds.X_test)
    X = Drift.parse("offset:0.5@0").apply_stream(X)
    _, scratch = _live(bundle, bits)
    corr = sr.propose(scratch, bundle, stats, X)
    # the numpy reference with the corrected float32 normalization and int32 biases
    quant = bundle.quant[bits]
    layers = [
        dataclasses.replace(lq, bias_q=corr.biases.get(i, lq.bias_q))
        for i, lq in enumerate(quant.layers)
    ]
    fixed = dataclasses.replace(quant, layers=layers)
    accs: dict[int, np.ndarray] = {}

    def hook(i: int, cols: np.ndarray, acc: np.ndarray) -> None:
        accs[i] = acc

    ref = reference.forward(bundle.arch["layers"], fixed, corr.mean, corr.std, X, hook)
    np.testing.assert_array_equal(scratch.predict_logits(X), ref)  # bit for bit
    # (a) the normalized stream has the training input's mean and scale again
    mu_n, sd_n = stats.target
    m, s = sr.channel_stats(X)
    np.testing.assert_allclose((m - corr.mean) / corr.std, mu_n, atol=1e-4)
    np.testing.assert_allclose(s / corr.std, sd_n, rtol=1e-4)
    # (b) every hidden channel's mean accumulator within half a step (+ float error) of
    # its training mean, computed in float64 from the reference's int32 accumulators
    for i in sr.hidden_layers(bundle):
        a = accs[i].astype(np.float64)
        mean = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1).mean(axis=1)
        assert np.abs(mean - stats.acc_mean[bits][i]).max() <= 0.5 + 1e-6, i
        assert corr.biases[i].dtype == np.int32


def test_restores_held_out_accuracy_under_gain_drift(bundle: Bundle) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None
    ds = load_dataset("basicmotions")
    Xd = Drift.parse("gain:0.3@0").apply_stream(ds.X_test)
    eng, scratch = _live(bundle, bundle.default_bits)
    stream, held = np.arange(0, 40, 2), np.arange(1, 40, 2)  # never labelled: held
    before = float((eng.predict(Xd[held])[0] == ds.y_test[held]).mean())
    res, corr = sr.run_stats_round(
        eng, scratch, bundle, stats, Xd[stream], (Xd[stream][:8], ds.y_test[stream][:8])
    )
    after = float((eng.predict(Xd[held])[0] == ds.y_test[held]).mean())
    assert res.rung == "stats" and res.version is not None and corr is not None
    assert before <= 0.5 and after >= 0.95, (before, after)
    assert eng.model_version == res.version


def test_a_correction_that_does_not_help_is_rolled_back(bundle: Bundle) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None
    ds = load_dataset("basicmotions")
    eng, scratch = _live(bundle, bundle.default_bits)
    version = eng.model_version
    res, corr = sr.run_stats_round(
        eng, scratch, bundle, stats, ds.X_test, (ds.X_test, ds.y_test)
    )  # no drift: nothing to win
    assert res.version is None and corr is None and eng.model_version == version


def test_bundle_without_statistics_uses_anchors_or_turns_the_rung_off(bundle: Bundle) -> None:
    bare = dataclasses.replace(
        bundle,
        extras={k: v for k, v in bundle.extras.items() if not k.startswith(("stats/", "drift/"))},
    )
    stats, why = sr.statistics_of(bare)
    assert stats is not None and stats.source == "anchors" and "anchors" in why
    ctl = CalibrationController(bare, CalibrationConfig())
    assert ctl.stats()["stats_rung"]["enabled"] and ctl.drift is not None
    none = dataclasses.replace(
        bare, extras={k: v for k, v in bare.extras.items() if k not in ("qcore_X", "qcore_y")}
    )
    stats, why = sr.statistics_of(none)
    assert stats is None and "no training statistics" in why
    ctl = CalibrationController(none, CalibrationConfig())
    st = ctl.stats()
    assert not st["stats_rung"]["enabled"] and st["trigger"] == "samples"
    Engine(none).predict(load_dataset("basicmotions").X_test[:2])  # still loads and runs
