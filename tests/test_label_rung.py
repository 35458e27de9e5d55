"""The label rung (edge_agent.calibrate.label_rung): its offsets (hand-computed MAP fit),
their integer steps, bit-exact logits against the engine, the leave-one-out gate, the
saved bundle, and the controller learning a drift that only labels reveal."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from edge_agent.bundle_io import from_bytes, load_bundle, to_bytes
from edge_agent.calibrate import label_rung as lr
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine

DEFAULT = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


def test_offsets_two_classes_one_label_match_the_hand_solution() -> None:
    # z = 0, one sample of class 0, sigma = 1: b = (t, -t) with t = 1 - p0 = 1 - s(2t),
    # i.e. t (1 + e^{-2t}) = e^{-2t}; solved here by bisection, independently of Newton
    lo, hi = 0.0, 1.0
    for _ in range(100):
        t = (lo + hi) / 2
        lo, hi = (t, hi) if t * (1 + math.exp(-2 * t)) < math.exp(-2 * t) else (lo, t)
    b = lr.fit_offsets(np.zeros((1, 2)), np.array([0]), sigma=1.0)
    np.testing.assert_allclose(b, [t, -t], atol=1e-9)


def test_offsets_are_stationary_and_finite_where_a_class_has_no_label() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (12, 4))
    y = np.array([1, 1, 1, 2, 2, 1, 1, 2, 1, 1, 2, 2])  # classes 0 and 3 never labelled
    b = lr.fit_offsets(z, y, sigma=2.0)
    s = z + b
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(4)[y]).sum(0) + b / 4.0
    assert np.abs(grad).max() < 1e-6 and np.all(np.isfinite(b))
    assert b[0] < 0 and b[3] < 0 and b[1] > 0  # the prior bounds what no label contradicts


def test_steps_round_offsets_on_each_class_output_scale() -> None:
    steps = lr.to_steps(np.array([0.5, -0.26, 0.0]), np.array([0.25, 0.1, 0.3], np.float32))
    np.testing.assert_array_equal(steps, [2, -3, 0])


def test_logits_of_accumulators_plus_steps_are_bit_exact_with_the_engine() -> None:
    bundle = load_bundle(DEFAULT)
    X = load_dataset("basicmotions").X_test[:16]
    steps = np.array([3, -7, 0, 120], np.int64)
    for bits in bundle.quant:
        eng = Engine(bundle, bits=bits)
        mult = lr.out_mult(bundle, bits)
        acc = lr.accumulators(eng, X)
        np.testing.assert_array_equal(lr.logits_of(acc, 0 * steps, mult), eng.predict_logits(X))
        last = len(eng.codes()) - 1
        eng.swap_params(biases={last: eng.layer_bias(last) + steps.astype(np.int32)})
        np.testing.assert_array_equal(lr.logits_of(acc, steps, mult), eng.predict_logits(X))


def test_leave_one_out_keeps_a_consistent_shift_and_refuses_noise() -> None:
    rng = np.random.default_rng(1)
    n, k = 20, 3
    mult = np.full(k, 0.05, np.float32)
    acc = rng.integers(-40, 40, (n, k)).astype(np.int64)
    acc[:, 0] += 60  # the model calls nearly everything class 0 ...
    y = np.full(n, 2)  # ... the labels say class 2
    live = lr.logits_of(acc, np.zeros(k, np.int64), mult)
    v = lr.leave_one_out(acc, live, y, mult, sigma=2.0)
    assert lr.accepted(v, lr.LabelConfig())[0] and v.loo_hits > v.live_hits
    y_noise = live.argmax(1)  # labels agree with the model: nothing to learn
    v = lr.leave_one_out(acc, live, y_noise, mult, sigma=2.0)
    assert not lr.accepted(v, lr.LabelConfig())[0]


def _relabelled_stream(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BasicMotions test samples of classes 0 and 1, every one now labelled 1 (the
    recording convention changed: what was class 0 is called class 1), cycled; and the
    other half of them (never streamed) with the new labels, to score."""
    ds = load_dataset("basicmotions")
    idx = np.flatnonzero(ds.y_test <= 1)
    stream, held = idx[::2], idx[1::2]
    order = stream[np.arange(n) % len(stream)]
    X = ds.X_test[order]
    return X, np.ones(n, np.int64), ds.X_test[held], np.ones(len(held), np.int64)


def _replay(cfg: CalibrationConfig) -> tuple[CalibrationController, float, float, Engine]:
    bundle = load_bundle(DEFAULT)
    ctl = CalibrationController(bundle, cfg)
    eng = Engine(bundle, bits=4)
    X, y, Xh, yh = _relabelled_stream(600)
    before = float(np.mean(ctl.predictor(eng).predict_classes(Xh) == yh))
    for i in range(len(X)):
        ctl.observe(X[i], int(y[i]) if i % 3 == 0 else None, i)
        while ctl.due():
            ctl.run(eng)
    after = float(np.mean(ctl.predictor(eng).predict_classes(Xh) == yh))
    return ctl, before, after, eng


def test_controller_learns_a_label_only_drift_and_saves_it() -> None:
    ctl, before, after, eng = _replay(CalibrationConfig())
    assert ctl.counts["label_rounds_kept"] >= 1, dict(ctl.counts)
    assert after >= before + 0.3, (before, after)  # held-out: never streamed
    assert ctl.last["rung"] in ("label", "flip", "stats")
    # the saved bundle restarts with the same model: biases and the steps it carries
    saved = from_bytes(to_bytes(ctl.bundle.with_codes(eng.bits, eng.codes())))
    X = load_dataset("basicmotions").X_test[:8]
    np.testing.assert_array_equal(Engine(saved, bits=4).predict_logits(X), eng.predict_logits(X))
    assert any(np.any(s) for s in lr.steps_of(saved).values())


def test_without_label_rounds_the_same_stream_is_not_learnt() -> None:
    ctl, before, after, _ = _replay(dataclasses.replace(CalibrationConfig(), label_every=0))
    assert ctl.counts["label_rounds_kept"] == 0
    assert after < before + 0.3, (before, after)
