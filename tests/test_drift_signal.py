"""The label-free drift signal on synthetic and real streams: it fires on a drift within a
bounded number of samples and stays quiet on long stationary streams."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.calibrate.drift_reference import DriftReference, OutputReference
from edge_agent.calibrate.drift_signal import DriftConfig, DriftSignal
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 3-channel sine windows with different frequencies and noise."""
    y = rng.integers(0, 2, n)
    t = np.linspace(0, 1, 64, dtype=np.float32)
    freq = np.where(y == 0, 3.0, 7.0)[:, None, None]
    phase = rng.uniform(0, 6.28, (n, 3, 1))
    X = np.sin(2 * np.pi * freq * t[None, None] + phase) * np.array([1.0, 2.0, 0.5])[:, None]
    return (X + rng.normal(0, 0.1, X.shape)).astype(np.float32), y


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    X, y = _synthetic(400, np.random.default_rng(0))
    return DriftReference.fit(X, y, 2)


def test_quiet_on_a_long_stationary_stream(reference: DriftReference) -> None:
    rng = np.random.default_rng(1)
    sig = DriftSignal(reference)
    for _ in range(20):  # 20,000 samples, unseen by the reference
        X, _ = _synthetic(1000, rng)
        sig.update(X)
    assert sig.n == 20_000 and sig.alarms == 0, sig.status()


def test_quiet_when_one_class_lasts(reference: DriftReference) -> None:
    """A label shift (a long run of one class) is not a drift."""
    X, y = _synthetic(6000, np.random.default_rng(2))
    sig = DriftSignal(reference)
    sig.update(np.concatenate([X[y == 0][:2000], X[y == 1][:2000]]))
    assert sig.alarms == 0, sig.status()


@pytest.mark.parametrize(
    "kind", ["offset:0.5", "gain:1.5", "gain:0.5", "noise:0.5", "rotation:30", "dropout:0.34"]
)
def test_fires_within_50_samples_of_a_drift(reference: DriftReference, kind: str) -> None:
    X, _ = _synthetic(1500, np.random.default_rng(3))
    Xd = Drift.parse(f"{kind}@1000").apply_stream(X)
    sig = DriftSignal(reference)
    fired = sig.update(Xd)
    assert fired and 1000 <= fired[0] < 1050, (fired, sig.status())
    assert sig.change_point is not None and abs(sig.change_point - 1000) <= 10


def test_rebaselines_after_an_alarm_and_fires_again_on_a_second_drift(
    reference: DriftReference,
) -> None:
    X, _ = _synthetic(4000, np.random.default_rng(4))
    X = Drift.parse("gain:2@500").apply_stream(X)  # never undone: the new normal
    X = Drift.parse("offset:1@3000").apply_stream(X)
    sig = DriftSignal(reference, DriftConfig(hold=500, baseline=256))
    fired = sig.update(X)
    assert len(fired) == 2 and 500 <= fired[0] < 550 and 3000 <= fired[1] < 3050, fired


def test_round_trip_through_bundle_extras(reference: DriftReference) -> None:
    again = DriftReference.from_extras(reference.to_extras())
    assert again is not None
    X, _ = _synthetic(50, np.random.default_rng(5))
    np.testing.assert_allclose(again.score(X), reference.score(X), rtol=1e-5)
    assert DriftReference.from_extras({}) is None


def test_real_data_stationary_and_drifted() -> None:
    """BasicMotions (the demo's data): its test split replayed 20,000 times in random
    order raises no alarm; the demo's rotation fires within 20 samples."""
    ds = load_dataset("basicmotions")
    ref = DriftReference.fit(ds.X_train, ds.y_train, ds.num_classes)
    idx = np.random.default_rng(6).integers(0, len(ds.X_test), 20_000)
    sig = DriftSignal(ref)
    assert sig.update(ds.X_test[idx]) == []
    rot = DriftSignal(ref)
    fired = rot.update(Drift.parse("rotation@100").apply_stream(ds.X_test[idx[:400]]))
    assert fired and 100 <= fired[0] < 120, fired


# ---------------------------------------------------------------- the output score

_OUT = OutputReference(4, (0.10, 0.10))  # entropy level on training data: mean, std


def _scores(entropy: np.ndarray, rng: np.random.Generator, ref: DriftReference) -> np.ndarray:
    """(N, 2) scores: input novelty at its training level, the given output entropies."""
    lo, sd = ref.level
    return np.stack([rng.normal(lo, sd, len(entropy)), entropy], axis=1)


def _entropy(n: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Skewed entropies in [0, 1] with the given mean (a Beta, as a softmax gives them)."""
    a = 2.0
    return rng.beta(a, a * (1 - mean) / mean, n)


def _output_signal(reference: DriftReference, hold: int = 1024) -> DriftSignal:
    def never(X: np.ndarray) -> np.ndarray:
        raise AssertionError("scores are fed precomputed")

    return DriftSignal(reference, DriftConfig(hold=hold), _OUT, never)


def test_output_score_quiet_at_the_held_out_gap(reference: DriftReference) -> None:
    """Unseen data of the training domain is less confident than the training data (up
    to 2.3 training stds more entropy on the real-drift sets): no alarm in 20,000 samples."""
    rng = np.random.default_rng(7)
    sig = _output_signal(reference)
    sig.update_scores(_scores(_entropy(20_000, 0.33, rng), rng, reference))
    assert sig.alarms == 0, sig.status()


def test_output_score_fires_when_the_model_gets_unsure(reference: DriftReference) -> None:
    rng = np.random.default_rng(8)
    ent = np.concatenate([_entropy(1000, 0.15, rng), _entropy(500, 0.6, rng)])
    sig = _output_signal(reference)
    fired = sig.update_scores(_scores(ent, rng, reference))
    assert fired and 1000 <= fired[0] < 1060 and sig.fired_by == "output", (fired, sig.status())
    assert sig.change_point is not None and abs(sig.change_point - 1000) <= 30


def test_output_score_fires_again_when_the_stream_returns(reference: DriftReference) -> None:
    """After the hold the drifted level is the new normal; going back to the training
    domain is a change again (the agent re-adapts to it)."""
    rng = np.random.default_rng(9)
    ent = np.concatenate([_entropy(1500, 0.6, rng), _entropy(600, 0.3, rng)])
    sig = _output_signal(reference, hold=500)
    fired = sig.update_scores(_scores(ent, rng, reference))
    assert len(fired) == 2 and fired[0] < 60 and 1500 <= fired[1] < 1600, fired


def test_output_score_of_a_bundle_batch_equals_one_at_a_time() -> None:
    from edge_agent.bundle_io import load_bundle
    from edge_agent.calibrate.stats_rung import with_statistics

    ds = load_dataset("basicmotions")
    path = "edge_agent/defaults/basicmotions.eab"
    bundle = with_statistics(load_bundle(path), ds.X_train, ds.y_train)
    out = OutputReference.from_extras(bundle.extras)
    ref = DriftReference.from_extras(bundle.extras)
    assert out is not None and ref is not None and 0.0 <= out.level[0] < 0.5
    sig = DriftSignal(ref, DriftConfig(), out, out.model(bundle))
    batch = sig.score(ds.X_test[:16])
    one = np.concatenate([sig.score(ds.X_test[i : i + 1]) for i in range(16)])
    np.testing.assert_array_equal(batch, one)
    assert np.all((batch[:, 1] >= 0) & (batch[:, 1] <= 1))
