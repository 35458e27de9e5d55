"""The output drift score reuses the inference's logits only where they are the drift
model's: same scores as scoring with the drift model's own pass, before and after a kept
round, a bit-width switch and a round undone."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.calibrate.drift_reference import predictive_entropy
from edge_agent.calibrate.drift_signal import DriftSignal
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

BUNDLE = "edge_agent/defaults/basicmotions.eab"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return load_dataset("basicmotions").X_test[:24].astype(np.float32)


def _signal(bundle: Bundle) -> DriftSignal:
    sig = CalibrationController(bundle, CalibrationConfig()).drift
    assert sig is not None and sig.output is not None and sig.model_key is not None
    return sig


def _flipped(eng: Engine) -> list[np.ndarray | None]:
    """The active model's codes with one weight of the last layer moved by one step."""
    codes = eng.codes()
    q = codes[-1].astype(np.int8)
    q[0, 0] = q[0, 0] - 1 if q[0, 0] > q.min() else q[0, 0] + 1
    return [None] * (len(codes) - 1) + [q]


def test_reused_logits_give_the_scores_of_the_drift_models_own_pass(
    bundle: Bundle, X: np.ndarray
) -> None:
    running = Engine(bundle)  # the agent's engine: the bundle's default bit-width
    own, reused = _signal(bundle), _signal(bundle)
    logits, key = running.predict_logits_keyed(X)
    assert key == reused.model_key == (bundle.default_bits, bundle.model_version)
    expected = own.score(X)
    np.testing.assert_array_equal(reused.score(X, logits, key), expected)
    assert reused.rescored == 0 and own.rescored == len(X)
    # the output column: the entropy of the deployed model's own logits
    np.testing.assert_array_equal(
        expected[:, 1], predictive_entropy(Engine(bundle).predict_logits(X))
    )


def test_a_kept_round_or_another_bit_width_scores_with_the_deployed_model(
    bundle: Bundle, X: np.ndarray
) -> None:
    running = Engine(bundle)
    sig = _signal(bundle)
    deployed = sig.score(X)
    start = sig.rescored
    original = running.codes()
    # a kept flip round: the running model's logits are no longer the drift model's
    running.swap_weights(_flipped(running))
    logits, key = running.predict_logits_keyed(X)
    assert key != sig.model_key
    assert not np.array_equal(predictive_entropy(logits), deployed[:, 1])
    np.testing.assert_array_equal(sig.score(X, logits, key), deployed)
    assert sig.rescored == start + len(X)
    # the energy policy switches the bit-width: another model again
    other = next(b for b in running.available_bits if b != bundle.default_bits)
    running.set_bits(other)
    logits, key = running.predict_logits_keyed(X)
    np.testing.assert_array_equal(sig.score(X, logits, key), deployed)
    assert sig.rescored == start + 2 * len(X)
    # back at the default bit-width, the kept round undone the way a rollback saves it
    # (the codes of the saved bundle and its version): the drift model's logits again
    running.set_bits(bundle.default_bits)
    saved = bundle.with_codes(bundle.default_bits, original)
    running.swap_weights(list(original), version=saved.model_version)
    logits, key = running.predict_logits_keyed(X)
    assert key == sig.model_key
    np.testing.assert_array_equal(sig.score(X, logits, key), deployed)
    assert sig.rescored == start + 2 * len(X)


def test_the_controller_scores_the_same_stream_the_same_with_reused_logits(
    bundle: Bundle, X: np.ndarray
) -> None:
    """What the agent does per batch: prescore with its logits, then observe in order."""
    running = Engine(bundle)
    with_logits = CalibrationController(bundle, CalibrationConfig())
    without = CalibrationController(bundle, CalibrationConfig())
    for s in range(0, len(X), 8):
        part = X[s : s + 8]
        logits, key = running.predict_logits_keyed(part)
        with_logits.prescore(part, logits, key)
        without.prescore(part)
        np.testing.assert_array_equal(
            np.array(with_logits.stream._scores), np.array(without.stream._scores)
        )
        for i, x in enumerate(part):
            with_logits.observe(x, None, s + i)
            without.observe(x, None, s + i)
    assert with_logits.drift is not None and without.drift is not None
    assert with_logits.drift.status() == {**without.drift.status(), "output_rescored": 0}


def _jobs(ctl: CalibrationController) -> list[tuple[int, int, str, bytes, bytes, bytes, int]]:
    out = []
    while (job := ctl.stream.get()) is not None:
        assert job.X is not None or job.kind == "label"  # a label job works on its window
        X = b"" if job.X is None else job.X.tobytes()
        y = b"" if job.y is None else job.y.tobytes()
        seqs = b"" if job.seqs is None else job.seqs.tobytes()
        recent = b"" if job.recent is None else job.recent[0].tobytes() + job.recent[1].tobytes()
        out.append((job.index, job.at, job.kind, X + recent, y, seqs, len(job.labels)))
    return out


def test_a_run_of_samples_observed_at_once_equals_one_at_a_time() -> None:
    """Alarms, their change points, chunks and statistics jobs: the same whether the
    stream arrives one sample per call or in runs (the agent's batches); a short hold
    puts several alarms into one run."""
    bundle = load_bundle(BUNDLE)
    ds = load_dataset("basicmotions")
    idx = np.random.default_rng(3).integers(0, len(ds.X_test), 900)
    X = ds.X_test[idx].astype(np.float32)
    X = Drift.parse("gain:3@300").apply_stream(X)  # both in the run 300..449
    X = Drift.parse("offset:2@390").apply_stream(X)
    labels: list[int | None] = [
        int(ds.y_test[i]) if n % 7 == 0 else None for n, i in enumerate(idx)
    ]
    cfg = CalibrationConfig(drift_hold=20, drift_baseline=30)
    one, runs = CalibrationController(bundle, cfg), CalibrationController(bundle, cfg)
    running = Engine(bundle)
    for s in range(0, len(X), 150):
        part = X[s : s + 150]
        logits, key = running.predict_logits_keyed(part)
        one.prescore(part)
        for i, x in enumerate(part):
            one.observe(x, labels[s + i], s + i)
        runs.prescore(part, logits, key)
        runs.observe_many(part, labels[s : s + 150], list(range(s, s + 150)))
    assert one.drift is not None and runs.drift is not None
    assert one.drift.alarms == 2 and one.drift.last_alarm < 450, one.drift.status()
    assert runs.drift.status() == {**one.drift.status(), "output_rescored": 0}
    assert runs.counts == one.counts
    assert runs.stream.episode == one.stream.episode and one.stream.episode is not None
    assert runs.stream.seen == one.stream.seen == len(X)
    assert _jobs(runs) == _jobs(one)
