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
from edge_agent.calibrate import stats_round
from edge_agent.calibrate import stats_rung as sr
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine import reference
from edge_agent.engine.engine import Engine

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    return load_bundle(DEFAULT)


@pytest.fixture(scope="module")
def bundle(shipped: Bundle) -> Bundle:
    """The demo bundle with every statistic the rung uses recorded (as training does)."""
    ds = load_dataset("basicmotions")
    return sr.with_statistics(shipped, ds.X_train, ds.y_train)


def _live(bundle: Bundle, bits: int) -> tuple[Engine, Engine]:
    eng = Engine(bundle, bits=bits)
    scratch = Engine(bundle, bits=bits, scratch=True)
    stats_round.sync(scratch, eng, sr.hidden_layers(bundle))
    return eng, scratch


def _drifted() -> np.ndarray:
    X = Drift.parse("gain:2.5@0").apply_stream(load_dataset("basicmotions").X_test)
    return Drift.parse("offset:0.5@0").apply_stream(X)


def _accumulators(bundle: Bundle, bits: int, X: np.ndarray) -> dict[int, np.ndarray]:
    """Every weighted layer's int32 accumulators in the numpy reference, (O, rest) float64."""
    accs: dict[int, np.ndarray] = {}

    def hook(i: int, cols: np.ndarray, acc: np.ndarray) -> None:
        a = acc.astype(np.float64)
        accs[i] = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)

    reference.forward(
        bundle.arch["layers"], bundle.quant[bits], bundle.norm_mean, bundle.norm_std, X, hook
    )
    return accs


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_correction_is_exact_on_the_engine_grid(bundle: Bundle, bits: int) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None and stats.source == "bundle" and stats.acc_std is not None
    X = _drifted()
    _, scratch = _live(bundle, bits)
    corr = sr.propose(scratch, bundle, stats, X)
    assert set(corr.layers) == set(bundle.quant)  # every bit-width, from the same samples
    fixed = sr.corrected_bundle(bundle, corr)
    # the numpy reference with the corrected normalization, biases and multipliers
    quant = fixed.quant[bits]
    ref = reference.forward(bundle.arch["layers"], quant, corr.mean, corr.std, X)
    np.testing.assert_array_equal(scratch.predict_logits(X), ref)  # bit for bit
    np.testing.assert_array_equal(Engine(fixed, bits=bits).predict_logits(X), ref)
    # (a) the normalized stream has the training input's mean and scale again
    mu_n, sd_n = stats.target
    m, s = sr.channel_stats(X)
    np.testing.assert_allclose((m - corr.mean) / corr.std, mu_n, atol=1e-4)
    np.testing.assert_allclose(s / corr.std, sd_n, rtol=1e-4)
    # (b) every hidden channel's requantized output: its training mean and spread again,
    # in the output's own units (multiplier times accumulator), within half a step
    old = bundle.quant[bits]
    accs = _accumulators(fixed, bits, X)
    for i in sr.hidden_layers(bundle):
        lq, lo = quant.layers[i], old.layers[i]
        assert lq.m0 is not None and lq.shift is not None and lo.m0 is not None
        assert lo.shift is not None
        mult = lq.m0 * np.exp2(-lq.shift.astype(np.float64))
        mult_old = lo.m0 * np.exp2(-lo.shift.astype(np.float64))
        a = accs[i]
        mean_t, std_t = stats.acc_mean[bits][i], stats.acc_std[bits][i]
        assert np.all(np.abs(mult * a.mean(axis=1) - mult_old * mean_t) <= 0.5 * mult + 1e-9), i
        ratio = std_t / np.maximum(a.std(axis=1) * mult / mult_old, 1e-12)
        free = (std_t >= 0.5) & (ratio > 1 / sr.MAX_RATIO) & (ratio < sr.MAX_RATIO)
        np.testing.assert_allclose(
            (mult * a.std(axis=1))[free], (mult_old * std_t)[free], rtol=1e-6
        )
        assert lq.bias_q.dtype == np.int32 and lq.m0.dtype == np.int32


@pytest.mark.parametrize("bits", [8, 4])
def test_layer_output_equals_the_float_adabn_reference_within_one_step(
    bundle: Bundle, bits: int
) -> None:
    """Per hidden layer, with the layers before it corrected: the corrected codes are
    within one output step of ``out_zp + M * (r * (acc - mean_s) + mean_t)`` in float
    (AdaBN of the accumulators: ``r`` = training std / stream std), clipped as the
    layer clips."""
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None and stats.acc_std is not None
    X = _drifted()
    _, scratch = _live(bundle, bits)
    corr = sr.propose(scratch, bundle, stats, X)
    fix = corr.layers[bits]
    ops = bundle.weighted_ops()
    for i in sr.hidden_layers(bundle):
        # layers before i corrected, layer i as shipped: its accumulators on the stream
        part = dataclasses.replace(corr, layers={bits: {j: f for j, f in fix.items() if j < i}})
        a = _accumulators(sr.corrected_bundle(bundle, part), bits, X)[i]
        lo = bundle.quant[bits].layers[i]
        assert lo.m0 is not None and lo.shift is not None and lo.out_zp is not None
        mult = (lo.m0 * np.exp2(-lo.shift.astype(np.float64)))[:, None]
        mean_s, std_s = a.mean(axis=1), a.std(axis=1)
        mean_t, std_t = stats.acc_mean[bits][i], stats.acc_std[bits][i]
        r = np.where(
            (std_s >= 0.5) & (std_t >= 0.5),
            np.clip(std_t / np.maximum(std_s, 1e-12), 1 / sr.MAX_RATIO, sr.MAX_RATIO),
            1.0,
        )[:, None]
        hi = (1 << bundle.quant[bits].act_bits) - 1
        low = lo.out_zp if ops[i].get("relu") else 0
        want = np.clip(lo.out_zp + mult * (r * (a - mean_s[:, None]) + mean_t[:, None]), low, hi)
        # the integer path: corrected accumulators, requantized with the new multiplier
        full = dataclasses.replace(corr, layers={bits: {j: f for j, f in fix.items() if j <= i}})
        b = _accumulators(sr.corrected_bundle(bundle, full), bits, X)[i]
        f = fix[i]
        got = reference.requantize(
            b.astype(np.int64)[None], f.m0, f.shift, lo.out_zp, bool(ops[i].get("relu")), 8
        )[0].astype(np.float64)
        got = np.clip(got, low, hi)
        assert np.abs(got - want).max() <= 1.0 + 1e-9, (i, np.abs(got - want).max())


def test_restores_held_out_accuracy_under_gain_drift(bundle: Bundle) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None
    ds = load_dataset("basicmotions")
    Xd = Drift.parse("gain:0.3@0").apply_stream(ds.X_test)
    eng, scratch = _live(bundle, bundle.default_bits)
    stream, held = np.arange(0, 40, 2), np.arange(1, 40, 2)  # never labelled: held
    before = float((eng.predict(Xd[held])[0] == ds.y_test[held]).mean())
    res, corr = stats_round.run_stats_round(
        eng, scratch, bundle, stats, Xd[stream], (Xd[stream][:8], ds.y_test[stream][:8])
    )
    after = float((eng.predict(Xd[held])[0] == ds.y_test[held]).mean())
    assert res.rung == "stats" and res.version is not None and corr is not None
    assert before <= 0.5 and after >= 0.95, (before, after)
    assert eng.model_version == res.version


def test_a_correction_that_loses_labelled_samples_is_rolled_back(bundle: Bundle) -> None:
    """Proposed from gain-drifted samples, vouched for by undrifted labelled ones: the
    correction rescales what is not drifted and loses them."""
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None
    ds = load_dataset("basicmotions")
    Xd = Drift.parse("gain:0.3@0").apply_stream(ds.X_test)
    eng, scratch = _live(bundle, bundle.default_bits)
    version = eng.model_version
    res, corr = stats_round.run_stats_round(eng, scratch, bundle, stats, Xd, (ds.X_test, ds.y_test))
    assert res.version is None and corr is None and eng.model_version == version
    assert not res.decision.accepted and res.decision.reason.startswith("loses"), res.decision


def _logits(classes: list[int]) -> np.ndarray:
    return np.eye(3)[classes]


def test_vouch_keeps_wins_and_ties_and_refuses_losses_or_too_few_labels() -> None:
    y = np.array([0, 1, 2, 0, 1])
    live = _logits([0, 1, 0, 1, 1])  # right on 0, 1, 4
    cases = {
        "wins": (_logits([0, 1, 2, 1, 1]), True),  # wins sample 2
        "tie": (_logits([0, 0, 2, 1, 1]), True),  # wins sample 2, loses sample 1
        "same": (live, True),  # nothing changes: the alarm's re-estimation stands
        "loses": (_logits([1, 1, 0, 1, 1]), False),  # loses sample 0
    }
    won_lost = {"wins": (1, 0), "tie": (1, 1), "same": (0, 0), "loses": (0, 1)}
    for name, (after, keep) in cases.items():
        d = stats_round.vouch(live, after, y, min_labelled=4)
        assert d.accepted == keep, (name, d)
        won, lost = won_lost[name]
        assert f"wins {won}" in d.reason and f"loses {lost}" in d.reason, (name, d)
    d = stats_round.vouch(live[:3], live[:3], y[:3], min_labelled=4)
    assert not d.accepted and "only 3" in d.reason


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


def test_scale_recovers_a_dead_channel_the_shift_alone_does_not(bundle: Bundle) -> None:
    stats, _ = sr.statistics_of(bundle)
    assert stats is not None and stats.acc_std is not None
    ds = load_dataset("basicmotions")
    Xd = Drift.parse("dropout:0.34@0").apply_stream(ds.X_test)
    stream, held = np.arange(0, 40, 2), np.arange(1, 40, 2)
    accs = []
    for st in (stats, dataclasses.replace(stats, acc_std=None)):
        eng, scratch = _live(bundle, 4)
        before = float((eng.predict(Xd[held])[0] == ds.y_test[held]).mean())
        sr.propose(scratch, bundle, st, Xd[stream])
        accs.append(float((scratch.predict(Xd[held])[0] == ds.y_test[held]).mean()))
    assert accs[0] >= before + 0.1 and accs[0] > accs[1], (before, accs)


def test_shipped_bundle_without_spreads_takes_them_from_its_anchors(shipped: Bundle) -> None:
    stats, why = sr.statistics_of(shipped)
    assert stats is not None and stats.acc_std is not None and "anchors" in why


def _rung_alone(bundle: Bundle, drift: str) -> tuple[CalibrationController, Engine]:
    """The controller (statistics rung, no flip rounds) and 4-bit engine after 200 drifted
    BasicMotions test samples, half of them labelled; its one correction kept."""
    ds = load_dataset("basicmotions")
    X = Drift.parse(drift).apply_stream(ds.X_test[np.arange(200) % len(ds.X_test)])
    y = ds.y_test[np.arange(200) % len(ds.y_test)]
    ctl = CalibrationController(bundle, CalibrationConfig(episode_rounds=0))
    eng = Engine(bundle, bits=4)
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 2 == 0 else None, i)
        while ctl.due():
            ctl.run(eng)
    assert ctl.counts["stats_rounds_kept"] == 1, dict(ctl.counts)
    return ctl, eng


def test_a_kept_correction_holds_at_every_bit_width_and_after_a_restart(bundle: Bundle) -> None:
    """The correction lives in one place: after a kept statistics round at 4 bits, the
    live engine at every bit-width equals an engine built from the bundle the agent would
    save (a restart), and the 8- and 2-bit models are corrected too."""
    ds = load_dataset("basicmotions")
    ctl, eng = _rung_alone(bundle, "gain:0.3@0")
    saved = ctl.bundle.with_codes(eng.bits, eng.codes())
    held = Drift.parse("gain:0.3@0").apply_stream(ds.X_test)
    for bits in (8, 4, 2):
        eng.set_bits(bits)
        live = eng.predict_logits(held)
        np.testing.assert_array_equal(live, Engine(saved, bits=bits).predict_logits(held))
        shipped = float((Engine(bundle, bits=bits).predict(held)[0] == ds.y_test).mean())
        assert float((live.argmax(axis=1) == ds.y_test).mean()) > shipped + 0.3, bits


def test_the_anchors_read_a_dead_channel_as_the_dead_sensor_does(bundle: Bundle) -> None:
    """After a kept correction for a dead channel, the flip rounds' anchors read what the
    dead sensor reads there (the corrected model sees the training mean, as on the
    stream), and elsewhere what the training normalization gave them. With their own
    values there (scaled a hundredfold by the correction) they looked drifted, and flip
    rounds fitted them."""
    ctl, eng = _rung_alone(bundle, "dropout:0.34@0")
    anchors, mean, std = ctl.calibrator.anchor_X, *eng.normalization()
    assert ctl.train_stats is not None
    dead = sr.dead_channels(ctl.train_stats, std)
    assert dead.tolist() == [True, True, False, False, False, False]
    np.testing.assert_allclose(anchors[:, dead], 0.0, atol=1e-5)
    live = (anchors[:, ~dead] - mean[~dead, None]) / std[~dead, None]
    x = np.asarray(bundle.extras["qcore_X"], np.float32)[:, ~dead]
    want = (x - bundle.norm_mean[~dead, None]) / bundle.norm_std[~dead, None]
    np.testing.assert_allclose(live, want, atol=1e-4)
