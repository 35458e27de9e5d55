"""A QCore buffer update predicts only the rows new to each model (ClassMemo), with the
result of predicting everything: the buffer's samples were re-predicted by the same models
at every update before."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.class_memo import ClassMemo
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.calibrate.qcore import QCoreBuffer
from edge_agent.cli.demo import DEFAULT_BUNDLE
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine, ModelKey
from edge_agent.engine.fp_model import fp_predict_fn

BUNDLE = load_bundle(str(DEFAULT_BUNDLE))
X_TEST = load_dataset("basicmotions").X_test.astype(np.float32)


class Counting:
    """A real engine's classes (called) or keyed logits, counting the rows asked for."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.rows = engine, 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return self.engine.predict_classes(X)

    def keyed(self, X: np.ndarray) -> tuple[np.ndarray, ModelKey]:
        self.rows += len(X)
        return self.engine.predict_logits_keyed(X)


def test_memo_runs_the_model_on_rows_it_has_not_seen_with_that_key_only() -> None:
    eng = Engine(BUNDLE, bits=4)
    spy, memo = Counting(eng), ClassMemo()
    f = memo.wrap(4, eng.model_key, spy.keyed)
    np.testing.assert_array_equal(f(X_TEST[:30]), eng.predict_classes(X_TEST[:30]))
    assert spy.rows == 30
    np.testing.assert_array_equal(f(X_TEST[10:40]), eng.predict_classes(X_TEST[10:40]))
    assert spy.rows == 30 + 10  # rows 30..39 are new
    other = Engine(BUNDLE, bits=8)  # another model at this width: every row again
    g = memo.wrap(4, other.model_key, Counting(other).keyed)
    np.testing.assert_array_equal(g(X_TEST[10:40]), other.predict_classes(X_TEST[10:40]))
    h = memo.wrap(4, None, spy.keyed)  # no key: every row, and nothing kept
    np.testing.assert_array_equal(h(X_TEST[10:40]), eng.predict_classes(X_TEST[10:40]))
    assert spy.rows == 40 + 30
    f(X_TEST[10:40])
    assert spy.rows == 70 + 30
    # counted where the memo applies (not for the key None call)
    assert (memo.rows_asked, memo.rows_predicted) == (4 * 30, 30 + 10 + 30 + 30)


def test_a_model_changed_after_its_key_was_read_is_not_remembered() -> None:
    eng = Engine(BUNDLE, bits=4)
    memo = ClassMemo()
    key = eng.model_key
    memo.wrap(4, key, eng.predict_logits_keyed)(X_TEST[:20])
    eng.set_bits(8)  # e.g. the energy policy switched width between the read and the call
    got = memo.wrap(4, key, eng.predict_logits_keyed)(X_TEST[:30])
    np.testing.assert_array_equal(got, eng.predict_classes(X_TEST[:30]))  # all the 8-bit's
    spy = Counting(eng)
    memo.wrap(4, key, spy.keyed)(X_TEST[:30])  # nothing was kept under the old key
    assert spy.rows == 30 + 30


def test_buffer_updates_through_the_memo_equal_updates_predicting_everything() -> None:
    fp = fp_predict_fn(BUNDLE)
    engines = {b: Engine(BUNDLE, bits=b) for b in (2, 4, 8)}
    plain = QCoreBuffer.from_bundle(BUNDLE, seed=3)
    memod = QCoreBuffer.from_bundle(BUNDLE, seed=3)
    spies = {b: Counting(e) for b, e in engines.items()}
    memo_spies = {b: Counting(e) for b, e in engines.items()}
    memo = ClassMemo()
    rng = np.random.default_rng(0)
    for step in range(6):
        idx = rng.choice(len(X_TEST), 32, replace=False)
        X = X_TEST[idx] + rng.normal(0, 0.05, (32, *BUNDLE.input_shape)).astype(np.float32)
        y = np.where(np.arange(32) % 4 == 0, 1, -1)  # a few labelled, most pseudo-labelled
        seqs = np.arange(step * 32, step * 32 + 32)
        if step == 3:  # the 4-bit model changes (here: to another one), so does its key
            spies[4], memo_spies[4] = Counting(engines[8]), Counting(engines[8])
        if step == 4:  # a real label for a buffered stream sample: its target changes
            for buf in (plain, memod):
                assert buf.set_label(int(buf.seq[buf.seq >= 0][0]), 2)
        keys = {b: (b, "changed" if b == 4 and step >= 3 else "v1") for b in engines}
        a = plain.update(X, y, y >= 0, dict(spies), fp, seqs=seqs)
        wrapped = {b: memo.wrap(b, keys[b], _keyed(s, keys[b])) for b, s in memo_spies.items()}
        b_ = memod.update(X, y, y >= 0, wrapped, fp, seqs=seqs)
        assert a == b_
        for name, arr in plain.to_state().items():
            np.testing.assert_array_equal(arr, memod.to_state()[name], err_msg=name)
    asked = sum(s.rows for s in spies.values())
    predicted = sum(s.rows for s in memo_spies.values())
    assert predicted < 0.6 * asked, (predicted, asked)


def _keyed(spy: Counting, key: ModelKey) -> Any:
    """``spy``'s keyed logits under ``key`` (the test names the models itself)."""
    return lambda X: (spy.keyed(X)[0], key)


def test_the_controllers_buffer_updates_predict_only_new_rows() -> None:
    ctl = CalibrationController(BUNDLE, CalibrationConfig())
    eng = Engine(BUNDLE)
    n = 4 * 32 * CalibrationConfig().unlabelled_every  # four chunks of unlabelled candidates
    X = X_TEST[np.arange(n) % len(X_TEST)]
    X = X + np.random.default_rng(1).normal(0, 0.05, X.shape).astype(np.float32)
    n0, widths = len(ctl.buffer), len(ctl._predict_by_bits(eng))
    ctl.observe_many(X, [None] * n, list(range(n)))
    updates = 0
    while ctl.due():
        ctl.run(eng)
        updates += 1
    assert updates >= 3
    memo, chunk = ctl._memo, CalibrationConfig().chunk
    # the first update predicts the buffer and the chunk at every width, the next the chunk
    assert memo.rows_predicted == widths * (n0 + chunk) + (updates - 1) * widths * chunk
    assert memo.rows_asked > memo.rows_predicted + (updates - 1) * widths * (n0 // 2)
