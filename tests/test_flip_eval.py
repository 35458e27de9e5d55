"""A candidate's pass from its first changed layer gives the engine's logits bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_engine import ARCHS, _inputs, random_bundle

from edge_agent.calibrate.flip_eval import first_changed, suffix_pass
from edge_agent.calibrate.flip_round import (
    BitFlipCalibrator,
    FlipConfig,
    Proposal,
    RoundResult,
    greedy_proposer,
)
from edge_agent.engine.engine import Engine
from kernels.plan.packing import qrange


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_suffix_pass_is_the_engine_pass_of_the_changed_weights(arch: str, bits: int) -> None:
    bundle = random_bundle(ARCHS[arch], act_bits=6 if arch == "convhead" else 8)
    engine = Engine(bundle, bits=bits)
    x = _inputs(ARCHS[arch], 9)
    _, inputs = engine.trace(x)
    codes = engine.codes()
    lo, hi = qrange(bits)
    rng = np.random.default_rng(bits)
    for start in range(1, len(codes)):
        changed = list(codes)
        for i in range(start, len(codes)):  # every layer from start on moves
            d = rng.integers(-1, 2, size=codes[i].shape)
            changed[i] = np.clip(codes[i] + d, lo, hi).astype(np.int8)
        assert first_changed(codes, changed) == start
        want = Engine(bundle, bits=bits)
        want.swap_weights({i: changed[i] for i in range(start, len(codes))})
        want_logits, want_inputs = want.trace(x)
        logits, got_inputs = suffix_pass(bundle, bits, changed, inputs, start)
        assert np.array_equal(logits, want_logits), (arch, bits, start)
        for a, b in zip(got_inputs, want_inputs, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), (arch, bits, start)


def test_first_changed_is_none_for_equal_codes() -> None:
    a = [np.zeros((2, 3), np.int8), np.ones((4, 2), np.int8)]
    assert first_changed(a, [a[0].copy(), a[1]]) is None
    b = [a[0], a[1].copy()]
    b[1][3, 1] = 2
    assert first_changed(a, b) == 1


def _last_layer_only(feats: list[np.ndarray]) -> Proposal:
    """The greedy proposal, hidden layers left alone."""
    out = greedy_proposer()(feats)
    return [(a if i == len(out) - 1 else np.zeros_like(a), s) for i, (a, s) in enumerate(out)]


def _full_passes(self: BitFlipCalibrator, bits, codes, traced, cand, X):  # type: ignore[no-untyped-def]
    return self._load(bits, cand).trace(X)


def _two_engines(self: BitFlipCalibrator, engine, current, best, X):  # type: ignore[no-untyped-def]
    return engine.predict_logits(X), self._load(engine.bits, best).predict_logits(X)


def _round(
    monkeypatch: pytest.MonkeyPatch, full: bool
) -> tuple[RoundResult, list[np.ndarray], int]:
    """A last-layer round on a random sensor bundle: result, codes, samples through engines."""
    if full:  # every candidate and the gate on whole engine passes (the plain way)
        monkeypatch.setattr(BitFlipCalibrator, "_candidate_pass", _full_passes)
        monkeypatch.setattr(BitFlipCalibrator, "_now_and_new", _two_engines)
    samples = [0]
    run = Engine._run

    def counted(self: Engine, st, xs, *a):  # type: ignore[no-untyped-def]
        samples[0] += len(xs)
        return run(self, st, xs, *a)

    monkeypatch.setattr(Engine, "_run", counted)
    bundle = random_bundle(ARCHS["sensor"])
    engine = Engine(bundle, bits=4)
    X = _inputs(ARCHS["sensor"], 40, seed=3)
    y = np.zeros(len(X), np.int64)  # labels the model disagrees with: the flips move it
    cfg = FlipConfig(budget_fraction=0.01, iterations=4, tolerance=1.0, anchor_tolerance=1.0)
    calib = BitFlipCalibrator(bundle, _last_layer_only, cfg)
    result = calib.run_round(engine, X, y, seed=0, recent=(X[:10], y[:10]))
    monkeypatch.undo()
    return result, engine.codes(), samples[0]


def test_a_last_layer_round_makes_one_pass_and_decides_as_whole_passes_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, codes, samples = _round(monkeypatch, full=False)
    want, want_codes, want_samples = _round(monkeypatch, full=True)
    assert result.iterations >= 2 and result.flips > 0  # candidates were tried and kept
    assert dataclasses.replace(result, cpu_seconds=0) == dataclasses.replace(want, cpu_seconds=0)
    assert all(np.array_equal(a, b) for a, b in zip(codes, want_codes, strict=True))
    # one traced pass of the calibration samples, one of the held-out and recent samples
    assert samples == 28 + 12 + 10, (samples, want_samples)
