"""Domain routing: each sample goes to the statistics correction of the domain its inputs
look like. Routing picks the right domain on offset and gain streams, clean samples keep
the base model's logits bit for bit after an adaptation, a restart restores the bank (a
damaged one falls back to the base domain, counted), and the drifted domain's accuracy
is not lower than without routing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import from_bytes, load_bundle, to_bytes
from edge_agent.calibrate import label_rung as lr
from edge_agent.calibrate import stats_rung as sr
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.calibrate.domains import (
    PREFIX,
    Domain,
    DomainBank,
    DomainParams,
    base_domain,
)
from edge_agent.calibrate.drift_reference import DriftReference, sample_features
from edge_agent.calibrate.routed import RoutedPredictor, model_version
from edge_agent.calibrate.schedule import Job
from edge_agent.calibrate.signature import Signature
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine
from edge_agent.service.config import ConfigError, parse_config

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"
GAIN = "gain:0.3@0"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    ds = load_dataset("basicmotions")
    return sr.with_statistics(load_bundle(DEFAULT), ds.X_train, ds.y_train)


def _stream(drift: str, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("basicmotions")
    order = np.arange(n) % len(ds.X_test)
    return Drift.parse(drift).apply_stream(ds.X_test[order]), ds.y_test[order]


def _adapted(bundle: Bundle, bits: int = 4, **cfg: int) -> tuple[CalibrationController, Engine]:
    """A controller (statistics rung alone: no flip or label rounds; ``cfg``: other knobs)
    after a clean then a gain-drifted stream."""
    ds = load_dataset("basicmotions")
    X, y = _stream(GAIN)
    X = np.concatenate([ds.X_train, ds.X_train, X])
    y = np.concatenate([ds.y_train, ds.y_train, y])
    ctl = CalibrationController(bundle, CalibrationConfig(episode_rounds=0, label_every=0, **cfg))
    eng = Engine(bundle, bits=bits)
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 2 == 0 else None, i)
        while ctl.due():
            ctl.run(eng)
    assert ctl.counts["stats_rounds_kept"] == 1, dict(ctl.counts)
    return ctl, eng


def test_routing_picks_the_domain_on_offset_and_gain_streams(bundle: Bundle) -> None:
    """Domains adapted (statistics rung) on drifted training samples; routed: the test
    samples, clean and under each drift (none of them fitted any signature)."""
    ref, stats = DriftReference.from_extras(bundle.extras), sr.statistics_of(bundle)[0]
    assert ref is not None and stats is not None
    hidden = sr.hidden_layers(bundle)
    bank = DomainBank((base_domain(bundle, hidden, ref),), capacity=3)
    ds = load_dataset("basicmotions")
    drifts = ("offset:1.5@0", "gain:3.0@0", "gain:0.3@0")
    for k, drift in enumerate(drifts):
        window = Drift.parse(drift).apply_stream(ds.X_train)
        scratch = Engine(bundle, bits=4, scratch=True)
        sr.propose(scratch, bundle, stats, window)
        params = DomainParams.of_engine(scratch, hidden)
        bank = bank.add(bank.adapted(window, scratch.predict_classes(window), params, k))
    assert [d.name for d in bank.domains] == ["base", "d1", "d2", "d3"]
    for want, X in enumerate(
        [ds.X_test, *(Drift.parse(d).apply_stream(ds.X_test) for d in drifts)]
    ):
        got = bank.route(sample_features(X))
        assert np.mean(got == want) >= 0.85, (want, np.bincount(got, minlength=4))
    # past its capacity the bank drops the domain routed to least recently
    window = Drift.parse("offset:-2@0").apply_stream(ds.X_train)
    last = bank.domains[1].params
    full = bank.add(bank.adapted(window, ds.y_train, last, 9), {"d1": 5, "d2": 1, "d3": 7})
    assert [d.name for d in full.domains] == ["base", "d1", "d3", "d4"]


def test_clean_samples_keep_the_base_models_logits_bit_exactly(bundle: Bundle) -> None:
    ctl, eng = _adapted(bundle)
    ds = load_dataset("basicmotions")
    routed = ctl.predictor(eng)
    assert isinstance(routed, RoutedPredictor) and len(routed.bank.domains) == 2
    clean = ds.X_test
    to_base = routed.route(clean) == 0
    assert to_base.mean() >= 0.8
    base = Engine(bundle, bits=4).predict_logits(clean)
    got = routed.predict_logits(clean)
    np.testing.assert_array_equal(got[to_base], base[to_base])
    # the live (adapted) model alone gives the clean samples other logits
    assert not np.array_equal(eng.predict_logits(clean)[to_base], base[to_base])
    status = ctl.stats()["routing"]
    assert status["enabled"] and [d["name"] for d in status["domains"]] == ["base", "d1"]


def test_routed_logits_name_no_single_model(bundle: Bundle) -> None:
    """The agent reuses inference logits for the output drift score only when their key
    is the drift model's: with a bank, the key must not be any engine's."""
    ctl, eng = _adapted(bundle)
    X = load_dataset("basicmotions").X_test[:8]
    logits, key = ctl.predictor(eng).predict_logits_keyed(X)
    assert key != eng.model_key and key != Engine(bundle, bits=4).model_key
    assert model_version(key) == eng.model_key[1]  # what predictions report
    np.testing.assert_array_equal(logits, ctl.predictor(eng).predict_logits(X))
    fresh = CalibrationController(bundle, CalibrationConfig(episode_rounds=0))
    plain = Engine(bundle, bits=4)
    assert fresh.predictor(plain).predict_logits_keyed(X)[1] == plain.model_key


def test_counted_predictions_show_in_status(bundle: Bundle) -> None:
    ctl, eng = _adapted(bundle)
    ds = load_dataset("basicmotions")
    drifted = Drift.parse(GAIN).apply_stream(ds.X_test)
    X = np.concatenate([ds.X_test, drifted])
    ctl.predictor(eng).predict(X, prepared=True)  # the gate's and the buffer's: not counted
    p = ctl.predictor(eng, count=True)
    p.predict(X, prepared=True)
    p.predict(X[:5], prepared=True)
    assert isinstance(p, RoutedPredictor)
    want = np.bincount(np.concatenate([p.route(X), p.route(X[:5])]), minlength=2)
    counts = {d["name"]: d["samples"] for d in ctl.stats()["routing"]["domains"]}
    assert [counts["base"], counts["d1"]] == want.tolist() and sum(counts.values()) == 85
    assert counts["base"] >= 30 and counts["d1"] >= 30


def test_drifted_accuracy_is_not_lower_than_without_routing(bundle: Bundle) -> None:
    ctl, eng = _adapted(bundle)
    ds = load_dataset("basicmotions")
    drifted = Drift.parse(GAIN).apply_stream(ds.X_test)
    routed = float((ctl.predictor(eng).predict(drifted)[0] == ds.y_test).mean())
    live = float((eng.predict(drifted)[0] == ds.y_test).mean())
    shipped = float((Engine(bundle, bits=4).predict(drifted)[0] == ds.y_test).mean())
    assert routed >= live and routed > shipped + 0.3, (routed, live, shipped)


def test_a_restart_restores_the_bank_and_a_damaged_one_falls_back(bundle: Bundle) -> None:
    ctl, eng = _adapted(bundle)
    saved = from_bytes(to_bytes(ctl.bundle.with_codes(eng.bits, eng.codes())))
    again = CalibrationController(saved, CalibrationConfig(episode_rounds=0))
    assert again.routing is not None and again.routing.bank is not None
    assert ctl.routing is not None and ctl.routing.bank is not None
    old, new = ctl.routing.bank.domains, again.routing.bank.domains
    assert [d.name for d in new] == [d.name for d in old] == ["base", "d1"]
    assert all(a.params.same(b.params) for a, b in zip(old, new, strict=True))
    ds = load_dataset("basicmotions")
    X = np.concatenate([ds.X_test, Drift.parse(GAIN).apply_stream(ds.X_test)])
    eng2 = Engine(saved, bits=4)
    np.testing.assert_array_equal(
        again.predictor(eng2).predict_logits(X), ctl.predictor(eng).predict_logits(X)
    )
    key = f"{PREFIX}1/4/0"
    bad = dataclasses.replace(saved, extras={**saved.extras, key: np.zeros((2, 3), np.int32)})
    broken = CalibrationController(bad, CalibrationConfig(episode_rounds=0))
    st = broken.stats()["routing"]
    assert broken.counts["domain_bank_errors"] == 1
    assert st["enabled"] and [d["name"] for d in st["domains"]] == ["base"]
    # a bank made for other quantization scales (a QAT burst since): not used, not an error
    q4 = saved.quant[4]
    layer0 = dataclasses.replace(q4.layers[0], w_scale=q4.layers[0].w_scale * 1.5)
    other = dataclasses.replace(
        saved, quant={**saved.quant, 4: dataclasses.replace(q4, layers=[layer0, *q4.layers[1:]])}
    )
    stale = CalibrationController(other, CalibrationConfig(episode_rounds=0))
    st = stale.stats()["routing"]
    assert stale.counts["domain_bank_errors"] == 0
    assert [d["name"] for d in st["domains"]] == ["base"]


def test_routing_off_predicts_with_the_engine(bundle: Bundle) -> None:
    ctl = CalibrationController(bundle, CalibrationConfig(route=False))
    eng = Engine(bundle, bits=4)
    assert ctl.predictor(eng) is eng and not ctl.stats()["routing"]["enabled"]


def test_route_keys_are_validated_like_the_others() -> None:
    cfg = parse_config("[calibration]\nroute = false\nroute_domains = 5\n")
    assert cfg.calibration.route is False and cfg.calibration.route_domains == 5
    assert parse_config("").calibration.route is True  # on by default
    with pytest.raises(ConfigError, match="route_domains"):
        parse_config("[calibration]\nroute_domains = 0\n")
    with pytest.raises(ConfigError, match="route"):
        parse_config('[calibration]\nroute = "yes"\n')


def test_a_window_belongs_to_a_held_domain_only_when_it_is_as_likely_as_its_own(
    bundle: Bundle,
) -> None:
    """Argmax alone would send every window somewhere: a new drift must not be taken for
    a return to the base or to an adapted domain."""
    ref, stats = DriftReference.from_extras(bundle.extras), sr.statistics_of(bundle)[0]
    assert ref is not None and stats is not None
    hidden = sr.hidden_layers(bundle)
    ds = load_dataset("basicmotions")
    base = base_domain(bundle, hidden, ref, ds.X_train)
    assert np.isfinite(base.typical)
    bank = DomainBank((base,), capacity=3)
    window = Drift.parse(GAIN).apply_stream(ds.X_train)
    scratch = Engine(bundle, bits=4, scratch=True)
    sr.propose(scratch, bundle, stats, window)
    params = DomainParams.of_engine(scratch, hidden)
    bank = bank.add(bank.adapted(window, scratch.predict_classes(window), params, 0))
    home = bank.home(sample_features(ds.X_test), 0.8)  # clean samples never fitted
    assert home is not None and home[0] == 0 and home[1] >= 0.8, home
    home = bank.home(sample_features(Drift.parse(GAIN).apply_stream(ds.X_test)), 0.8)
    assert home is not None and home[0] == 1, home
    new = sample_features(Drift.parse("offset:1.5@0").apply_stream(ds.X_test))
    assert bank.home(new, 0.8) is None
    assert np.isin(bank.route(new), [0, 1]).all()  # ... though argmax sends it to one of them
    # without a typical likelihood (a bank saved before it was kept) no return
    unknown = dataclasses.replace(bank, domains=(dataclasses.replace(base, typical=np.nan),))
    assert unknown.home(sample_features(ds.X_test), 0.8) is None
    # the typical likelihood survives a save
    saved = dataclasses.replace(bundle, extras={**bundle.extras, **bank.to_extras(bundle)})
    again = DomainBank.from_extras(saved, hidden)
    assert again is not None and [d.typical for d in again.domains] == [
        d.typical for d in bank.domains
    ]


def test_a_row_typical_of_the_base_only_stays_there(bundle: Bundle) -> None:
    """A tight adapted domain wins by likelihood rows near its centre that none of its
    own samples looked like; those the training domain finds typical stay there."""
    params = DomainParams.of_bundle(bundle, sr.hidden_layers(bundle))
    rng = np.random.default_rng(0)
    f = 3 * bundle.input_shape[0]

    def domain(name: str, mean: float, std: float) -> Domain:
        sig = Signature(np.full((1, f), mean), np.full((1, f), std), np.zeros(1))
        return Domain(name, sig, params, typical=sig.typical(rng.normal(mean, std, (500, f))))

    bank = DomainBank((domain("base", 0.0, 1.0), domain("d1", 0.5, 0.1)))
    near, off = np.full((1, f), 0.52), np.full((1, f), 0.65)  # off: atypical of d1
    base, d1 = (d.signature.score(off)[0] for d in bank.domains)
    assert d1 > base >= bank.base.typical and d1 < bank.domains[1].typical
    assert bank.route(near).tolist() == [1] and bank.route(off).tolist() == [0]
    # of an adapted domain of unknown typical likelihood, no row is typical
    unknown = dataclasses.replace(bank.domains[1], typical=np.nan)
    assert DomainBank((bank.base, unknown)).route(near).tolist() == [0]


def test_a_return_to_the_training_domain_makes_it_live_again(bundle: Bundle) -> None:
    ctl, eng = _adapted(bundle, drift_hold=64, drift_baseline=64)
    assert ctl.routing is not None and ctl.routing.live == "d1"
    ds = load_dataset("basicmotions")
    gain, gain_y = _stream(GAIN, 200)  # the drift goes on (the signal's new baseline) ...
    X = np.concatenate([gain, *[ds.X_test, ds.X_train] * 4])  # ... then back to clean
    y = np.concatenate([gain_y, *[ds.y_test, ds.y_train] * 4])
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 2 == 0 else None, 1000 + i)
        while ctl.due():
            ctl.run(eng)
    assert ctl.counts["domain_returns"] == 1, dict(ctl.counts)
    assert ctl.counts["stats_rounds_kept"] == 2, dict(ctl.counts)  # the return counts as one
    assert ctl.routing.live == "base" and ctl.stats()["routing"]["live"] == "base"
    assert [d.name for d in ctl.routing.bank.domains] == ["base", "d1"]  # nothing new
    plain = Engine(bundle, bits=4)
    for b in eng.available_bits:  # the training correction at every bit-width
        np.testing.assert_array_equal(eng.normalization(b)[0], plain.normalization(b)[0])
        for i in sr.hidden_layers(bundle):
            np.testing.assert_array_equal(eng.layer_bias(i, b), plain.layer_bias(i, b))
    np.testing.assert_array_equal(eng.predict_logits(ds.X_test), plain.predict_logits(ds.X_test))
    assert ctl.last["reason"].endswith("belongs to base: its correction again")


def _mixed(
    bundle: Bundle,
) -> tuple[CalibrationController, Engine, np.ndarray, RoutedPredictor, np.ndarray]:
    """An adapted controller (d1 live), clean and drifted test samples, its routed
    predictor and which samples go to the training domain (about half)."""
    ctl, eng = _adapted(bundle, drift_hold=64, drift_baseline=64)
    assert ctl.routing is not None and ctl.routing.live == "d1"
    ds = load_dataset("basicmotions")
    X = np.concatenate([ds.X_test, Drift.parse(GAIN).apply_stream(ds.X_test)])
    routed = ctl.predictor(eng)
    assert isinstance(routed, RoutedPredictor)
    to_base = routed.route(X) == 0
    assert 0.3 <= to_base.mean() <= 0.7
    return ctl, eng, X, routed, to_base


def test_a_flip_kept_on_an_adapted_domain_leaves_the_training_domain_alone(
    bundle: Bundle,
) -> None:
    """A kept flip changes the live domain's weights only: samples routed to the training
    domain keep its logits bit for bit, through a restart too, and a return to it runs
    its own weights again."""
    ctl, eng, X, routed, to_base = _mixed(bundle)
    before = routed.predict_logits(X)
    last = len(eng.codes()) - 1  # a kept flip round, as run_round swaps it in
    q = eng.layer_codes(last).astype(np.int16)
    q[:, ::2] = np.clip(q[:, ::2] + 1, -8, 7)
    eng.swap_weights({last: q.astype(np.int8)})
    after = routed.predict_logits(X)
    np.testing.assert_array_equal(after[to_base], before[to_base])
    assert not np.array_equal(after[~to_base], before[~to_base])
    saved = from_bytes(to_bytes(ctl.bundle.with_codes(eng.bits, eng.codes())))
    again = CalibrationController(saved, CalibrationConfig(episode_rounds=0))
    assert again.routing is not None and again.routing.live == "d1"
    np.testing.assert_array_equal(again.predictor(Engine(saved, bits=4)).predict_logits(X), after)
    # the stream goes back to clean: the training domain's correction and weights again
    ds = load_dataset("basicmotions")
    clean = np.concatenate([*[ds.X_test, ds.X_train] * 4])
    labels = np.concatenate([*[ds.y_test, ds.y_train] * 4])
    for i in range(len(clean)):
        ctl.observe(clean[i], int(labels[i]) if i % 2 == 0 else None, 1000 + i)
        while ctl.due():
            ctl.run(eng)
    assert ctl.routing is not None and ctl.routing.live == "base"
    assert ctl.counts["domain_returns"] == 1
    plain = Engine(bundle, bits=4)
    np.testing.assert_array_equal(eng.codes()[last], plain.codes()[last])
    np.testing.assert_array_equal(eng.predict_logits(ds.X_test), plain.predict_logits(ds.X_test))


def test_a_label_correction_kept_on_an_adapted_domain_leaves_the_training_domain_alone(
    bundle: Bundle,
) -> None:
    """A kept label correction moves the live domain's last-layer bias only: samples
    routed to the training domain keep its logits bit for bit, through a restart too
    (``watch_subject`` noise: a label round on the drifted domain had cost the clean
    samples 16 points, ``bench/forget_diagnose.py``)."""
    ctl, eng, X, routed, to_base = _mixed(bundle)
    before = routed.predict_logits(X)
    k = bundle.num_classes  # a kept label round, as the label rung puts it in
    offsets = np.where(np.arange(k) == 0, 8.0, 0.0)
    steps = {b: lr.to_steps(offsets, lr.out_mult(ctl.bundle, b)) for b in ctl.bundle.quant}
    fix = lr.LabelFix(offsets, steps)
    new = lr.biases(eng, lr.steps_of(ctl.bundle), fix)
    lr.apply(eng, new)
    after = routed.predict_logits(X)
    np.testing.assert_array_equal(after[to_base], before[to_base])
    moved = after[~to_base] - before[~to_base]  # the live domain runs it: class 0 up 8
    np.testing.assert_allclose(moved, np.broadcast_to(offsets, moved.shape), atol=0.05)
    assert ctl.routing is not None
    saved = ctl.routing.saved(lr.labelled_bundle(ctl.bundle, new, fix))
    saved = from_bytes(to_bytes(saved.with_codes(eng.bits, eng.codes())))
    again = CalibrationController(saved, CalibrationConfig(episode_rounds=0))
    assert again.routing is not None and again.routing.live == "d1"
    np.testing.assert_array_equal(again.predictor(Engine(saved, bits=4)).predict_logits(X), after)


def test_a_label_round_fits_the_live_domains_samples_only(bundle: Bundle) -> None:
    """The label rung's window may span a change (the stream back in the training domain,
    the latest labels still from the drift): the live domain's correction is fitted on
    the labelled samples routed to it, never on another domain's (``watch_subject`` noise
    return: a label round on the drift's samples, kept on the training domain, cost the
    clean samples 27 points)."""
    ctl, eng = _adapted(bundle)
    assert ctl.routing is not None and ctl.routing.live == "d1"
    ds = load_dataset("basicmotions")
    renamed = np.zeros(len(ds.y_test), np.int64)  # every sample now named class 0
    drifted = Drift.parse(GAIN).apply_stream(ds.X_test)
    before = eng.predict_logits(drifted)
    routed = ctl.predictor(eng)
    assert isinstance(routed, RoutedPredictor)
    to_live = int(np.sum(routed.route(ds.X_test) == 1))  # clean samples the router misses
    clean = ctl._label_round(eng, Job(0, 0, "label", recent=(ds.X_test, renamed)))
    assert clean.version is None and clean.decision.n == to_live < 8, clean.decision
    np.testing.assert_array_equal(eng.predict_logits(drifted), before)
    live = ctl._label_round(eng, Job(1, 0, "label", recent=(drifted, renamed)))
    assert live.version is not None, live.decision  # the live domain's own: learnt


def test_flips_kept_after_an_alarm_on_the_training_domain_make_a_domain(bundle: Bundle) -> None:
    """No correction kept (no statistics round here), flip rounds after a drift alarm:
    a kept one becomes a domain of its own and the training domain keeps its weights, so
    clean samples keep the shipped logits bit for bit, through a restart too (``rainfall``
    offset: three such rounds on the training domain had cost the clean samples 4.6
    points, ``bench/forget_diagnose.py``)."""
    ds = load_dataset("basicmotions")
    X, y = _stream(GAIN)
    X, y = np.concatenate([ds.X_train, ds.X_train, X]), np.concatenate([ds.y_train] * 2 + [y])
    ctl = CalibrationController(bundle, CalibrationConfig(stats_rounds=0, label_every=0))
    eng = Engine(bundle, bits=4)
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 2 == 0 else None, i)
        while ctl.due():
            ctl.run(eng)
    assert ctl.counts["flip_rounds_kept"] >= 1 and ctl.counts["stats_rounds_kept"] == 0
    assert ctl.routing is not None and ctl.routing.live == "d1", dict(ctl.counts)
    routed = ctl.predictor(eng)
    assert isinstance(routed, RoutedPredictor)
    to_base = routed.route(ds.X_test) == 0
    assert to_base.mean() >= 0.8
    shipped = Engine(bundle, bits=4).predict_logits(ds.X_test)
    np.testing.assert_array_equal(routed.predict_logits(ds.X_test)[to_base], shipped[to_base])
    assert not np.array_equal(eng.predict_logits(ds.X_test), shipped)  # the flips: d1's
    saved = from_bytes(to_bytes(ctl.bundle.with_codes(eng.bits, eng.codes())))
    again = CalibrationController(saved, CalibrationConfig(episode_rounds=0))
    assert again.routing is not None and again.routing.live == "d1"
    np.testing.assert_array_equal(
        again.predictor(Engine(saved, bits=4)).predict_logits(ds.X_test),
        routed.predict_logits(ds.X_test),
    )
    # a correction kept while the forked domain is live takes its place (same drift)
    ctl.routing.keep(eng, _stream(GAIN, 64)[0], len(X))
    assert ctl.routing.bank is not None
    assert [d.name for d in ctl.routing.bank.domains] == ["base", "d2"]
    assert ctl.routing.live == "d2"


def test_a_mirrored_domain_takes_only_the_samples_its_signs_turn_back(bundle: Bundle) -> None:
    """A domain whose correction flips channels (the sensor worn the other way round)
    gets a row only if the flip makes it more like the training data: the clean test
    samples stay on the training domain, the mirrored ones go to it (by likelihood alone
    its signature, fitted on one window, won clean samples too)."""
    ref, stats = DriftReference.from_extras(bundle.extras), sr.statistics_of(bundle)[0]
    assert ref is not None and stats is not None
    hidden = sr.hidden_layers(bundle)
    ds = load_dataset("basicmotions")
    flip = np.array([-1, 1, 1, 1, -1, -1], np.float32)[None, :, None]  # acc x, gyro y z
    window = ds.X_train * flip
    scratch = Engine(bundle, bits=4, scratch=True)
    sr.propose(scratch, bundle, stats, window)
    params = DomainParams.of_engine(scratch, hidden)
    assert (np.sign(params.std[4]) == flip.ravel()).all()  # the rung found the mirror
    bank = DomainBank((base_domain(bundle, hidden, ref),), capacity=3)
    bank = bank.add(bank.adapted(window, scratch.predict_classes(window), params, 0))
    assert np.mean(bank.route(sample_features(ds.X_test)) == 0) >= 0.95
    # a standing sample's means are near 0 either way: no evidence of a mirror there
    assert np.mean(bank.route(sample_features(ds.X_test * flip)) == 1) >= 0.75


def test_a_clean_window_returns_to_the_base_though_a_tighter_domain_wins_part_of_it(
    bundle: Bundle,
) -> None:
    """An adapted domain fitted on a window inside the training domain's spread wins by
    likelihood about a third of a clean window that is wholly typical of the training
    domain; the window is still the training domain's (by routing alone none had 80%,
    and the agent fitted a new correction to clean data). A window of the adapted
    domain's own kind, typical of both, still goes to it."""
    ref = DriftReference.from_extras(bundle.extras)
    assert ref is not None
    ds = load_dataset("basicmotions")
    params = base_domain(bundle, sr.hidden_layers(bundle), ref, ds.X_train).params
    rng = np.random.default_rng(0)
    train, own = rng.normal(0.0, 1.0, (2000, 2)), rng.normal(0.6, 0.6, (400, 2))
    floor = np.full(2, 1e-3)
    sig = Signature.fit(train, np.zeros(len(train), np.int64), floor)
    tight = Signature.fit(own, np.zeros(len(own), np.int64), floor)
    bank = DomainBank(
        (
            Domain("base", sig, params, -1, sig.typical(train)),
            Domain("d1", tight, params, 10, tight.typical(own)),
        ),
        made=1,
        live="d1",
    )
    clean = rng.normal(0.0, 1.0, (256, 2))
    assert 0.2 < np.mean(bank.route(clean) == 1) < 0.5  # the tighter domain wins part
    home = bank.home(clean, 0.8)
    assert home is not None and home[0] == 0 and home[1] >= 0.9, home
    home = bank.home(rng.normal(0.6, 0.6, (256, 2)), 0.8)
    assert home is not None and home[0] == 1, home
