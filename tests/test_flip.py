"""Bit flipping: features, selection within budget, weights on grid, the gate, no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate import gate
from edge_agent.calibrate.flip_features import (
    FEATURES,
    conv_patch_stats,
    input_divisors,
    layer_features,
)
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import (
    BaseCheck,
    BitFlipCalibrator,
    FlipConfig,
    RoundResult,
    apply_flips,
    greedy_proposer,
    random_proposer,
    recent_gain,
    select_flips,
)
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine
from edge_agent.engine.reference import forward, patches
from kernels.plan.packing import qrange, unpack_rows


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_flips_stay_on_grid_and_in_range(bits: int) -> None:
    rng = np.random.default_rng(bits)
    lo, hi = qrange(bits)
    codes = [rng.integers(lo, hi + 1, size=(7, 13)).astype(np.int8) for _ in range(3)]
    codes[0][0, :] = lo
    codes[0][1, :] = hi
    for _ in range(20):
        deltas = [rng.integers(-1, 2, size=q.shape).astype(np.int8) for q in codes]
        codes = apply_flips(codes, deltas, bits)
        for q in codes:
            assert q.dtype == np.int8 and q.min() >= lo and q.max() <= hi


def test_select_flips_respects_budget_and_ranks_by_score() -> None:
    actions = [np.array([[1, -1, 0], [1, 1, 1]], np.int8), np.array([[-1, 1]], np.int8)]
    scores = [np.array([[0.9, 0.1, 5.0], [0.5, 0.2, 0.3]]), np.array([[0.8, 0.05]])]
    deltas = select_flips(list(zip(actions, scores, strict=True)), budget=3)
    assert sum(int(np.abs(d).sum()) for d in deltas) == 3
    assert deltas[0].tolist() == [[1, 0, 0], [1, 0, 0]]  # 0.9, 0.5; the 5.0 is action 0
    assert deltas[1].tolist() == [[-1, 0]]
    assert (
        sum(np.abs(d).sum() for d in select_flips(list(zip(actions, scores, strict=True)), 100))
        == 7
    )


def test_patches_reproduce_the_integer_accumulators(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    quant = bundle.quant[4]
    X = load_dataset("basicmotions").X_test[:5]
    seen: list[tuple[int, np.ndarray, np.ndarray]] = []
    forward(
        bundle.arch["layers"],
        quant,
        bundle.norm_mean,
        bundle.norm_std,
        X,
        lambda i, c, a: seen.append((i, c, a)),
    )
    for i, cols, acc in seen:
        lq = quant.layers[i]
        q = unpack_rows(lq.packed, lq.k, lq.bits).astype(np.int64)
        got = cols @ q.T + lq.bias_q  # (N, P, O)
        want = acc.reshape(acc.shape[0], acc.shape[1], -1).transpose(0, 2, 1)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [((5,), (1,), (2,)), ((4,), (3,), (1,)), ((3, 3), (1, 1), (1, 1)), ((2, 3), (1, 2), (0, 1))],
)
def test_conv_patch_stats_are_those_of_the_im2col_patches(
    kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]
) -> None:
    spatial = (11,) if len(kernel) == 1 else (9, 7)
    x = np.random.default_rng(0).integers(-50, 200, (7, 3, *spatial)).astype(np.float32)
    full = patches(x, kernel, stride, padding)
    cols = full.reshape(len(x), -1, full.shape[-1])
    mean, rows = conv_patch_stats(x, kernel, stride, padding, max_rows=10**6)
    np.testing.assert_array_equal(rows, cols.reshape(-1, cols.shape[-1]))
    np.testing.assert_allclose(mean, cols.mean(axis=1, dtype=np.float64), rtol=1e-12)
    positions = cols.shape[1]
    last = full.shape[-2]  # output positions along the last spatial axis
    for max_rows in (positions * len(x) // 2, 20):
        _, few = conv_patch_stats(x, kernel, stride, padding, max_rows=max_rows)
        lines = positions * len(x) // last
        step = next((st for st in range(1, last) if lines * -(-last // st) <= max_rows), last)
        assert len(few) <= max_rows or step == last
        np.testing.assert_array_equal(few, full[..., ::step, :].reshape(-1, full.shape[-1]))


def test_trace_means_are_the_reference_accumulators(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    X = load_dataset("basicmotions").X_test[:9]
    accs: list[np.ndarray] = []
    forward(
        bundle.arch["layers"],
        bundle.quant[4],
        bundle.norm_mean,
        bundle.norm_std,
        X,
        lambda i, c, a: accs.append(a),
    )
    calib = BitFlipCalibrator(bundle, greedy_proposer())
    _, traces = calib.trace(4, calib.deployed_codes(4), X)
    layers = zip(bundle.quant[4].layers, traces, accs, input_divisors(bundle), strict=True)
    for lq, tr, acc, divisor in layers:
        mean_acc = acc.reshape(len(X), acc.shape[1], -1).mean(axis=2)
        real = lq.w_scale.astype(np.float64) * (lq.in_scale / divisor)
        np.testing.assert_allclose(tr.out_mean / real, mean_acc, rtol=1e-9, atol=1e-6)


def test_features_shapes_and_zero_reconstruction_step(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    quant = bundle.quant[2]
    ds = load_dataset("basicmotions")
    calib = BitFlipCalibrator(bundle, greedy_proposer())
    codes = calib.deployed_codes(2)
    logits, traces = calib.trace(2, codes, ds.X_test[:8])
    zeros = [np.zeros(q.shape) for q in codes]
    feats = layer_features(bundle, quant, codes, codes, zeros, traces, logits, ds.y_test[:8])
    assert [f.shape for f in feats] == [(*q.shape, len(FEATURES)) for q in codes]
    for f in feats:  # codes equal to latent weights: nothing to reconstruct
        assert np.all(f[..., FEATURES.index("rec_step")] == 0)
        assert np.all(f[..., FEATURES.index("step_size")] == 0.5)
    assert np.any(feats[-1][..., FEATURES.index("task_step")] != 0)
    residuals = calib.residuals(2)
    assert all(np.abs(r).max() <= 0.5 for r in residuals)
    assert any(np.abs(r).max() > 0 for r in residuals)


def test_gate_rolls_back_a_round_that_hurts(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    ds = load_dataset("basicmotions")
    X, y_true = ds.X_test, ds.y_test
    engine = Engine(bundle, bits=4)
    cfg = FlipConfig(budget_fraction=0.05, iterations=8, holdout_fraction=0.5)
    cal, hold = gate.holdout_split(len(X), cfg.holdout_fraction, seed=0)
    y = y_true.copy()
    y[cal] = 0  # the flips fit wrong labels; the held-out part knows better
    before = engine.model_version
    acc_before = float(np.mean(engine.predict(X[hold])[0] == y_true[hold]))
    result = BitFlipCalibrator(bundle, greedy_proposer(), cfg).run_round(engine, X, y, seed=0)
    assert result.loss_after < result.loss_before  # the flips did fit the wrong labels
    assert not result.decision.accepted  # worse accuracy, or equal accuracy and worse loss
    assert result.decision.reason in (
        "worse on held-out data",
        "worse on pre-drift anchors",
        "held-out plus anchor soft accuracy not higher",
    )
    assert result.decision.after <= result.decision.before <= acc_before + 1e-9
    assert engine.model_version == before and result.version is None and result.flips == 0


def test_accepted_round_swaps_weights_within_range(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    ds = load_dataset("basicmotions")
    engine = Engine(bundle, bits=4)
    # the held-out score may not veto, and without a QCore there are no anchors that could;
    # a budget that moves any trained test bundle (2% left one trained on another CPU
    # unchanged: every candidate clipped at the grid or no lower loss)
    cfg = FlipConfig(budget_fraction=0.1, iterations=3, tolerance=1.0)
    extras = {k: v for k, v in bundle.extras.items() if not k.startswith("qcore_")}
    calib = BitFlipCalibrator(dataclasses.replace(bundle, extras=extras), greedy_proposer(), cfg)
    assert len(calib.anchor_X) == 0
    y = np.zeros_like(ds.y_train)  # labels the model disagrees with: the flips must move it
    result = calib.run_round(engine, ds.X_train, y, seed=1)
    if result.flips == 0:
        pytest.fail(f"expected the greedy round to flip something: {result}")
    assert result.decision.accepted and engine.model_version == result.version
    lo, hi = qrange(4)
    changed = 0
    for i, q0 in enumerate(calib.deployed_codes(4)):
        q = engine.layer_codes(i)
        assert q.min() >= lo and q.max() <= hi
        changed += int((q != q0).sum())
    assert changed == result.flips


def test_a_round_that_loses_recent_labelled_samples_is_rolled_back(
    basicmotions_bundle: Path,
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    extras = {k: v for k, v in bundle.extras.items() if not k.startswith("qcore_")}
    bundle = dataclasses.replace(bundle, extras=extras)
    ds = load_dataset("basicmotions")
    y = np.zeros_like(ds.y_train)  # the buffer pulls everything towards class 0
    # 2 bits: a kept round must change test predictions, which a 4-bit test bundle trained
    # on some CPUs resists at any budget

    def round_(recent: tuple[np.ndarray, np.ndarray] | None) -> tuple[Engine, RoundResult]:
        engine = Engine(bundle, bits=2)
        calib = BitFlipCalibrator(bundle, greedy_proposer(), FlipConfig(0.3, iterations=8))
        return engine, calib.run_round(engine, ds.X_train, y, seed=1, recent=recent)

    current = Engine(bundle, bits=2).predict(ds.X_test)[0]
    kept, result = round_(None)  # without the window the round is kept ...
    assert result.decision.accepted
    assert (kept.predict(ds.X_test)[0] != current).any()  # ... and changes stream predictions
    engine, result = round_((ds.X_test, current))  # the same round, the stream as it was
    assert not result.decision.accepted
    assert result.decision.reason == "worse on recent labelled samples"
    assert engine.model_version == bundle.model_version and result.flips == 0


def test_a_round_that_loses_training_domain_samples_through_the_router_is_rolled_back(
    basicmotions_bundle: Path,
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    extras = {k: v for k, v in bundle.extras.items() if not k.startswith("qcore_")}
    bundle = dataclasses.replace(bundle, extras=extras)
    ds = load_dataset("basicmotions")
    y = np.zeros_like(ds.y_train)  # the buffer pulls everything towards class 0
    routed: list[Engine] = []

    def router(e: Engine) -> Callable[[np.ndarray], np.ndarray]:
        routed.append(e)
        return e.predict_logits

    def round_(base: BaseCheck | None) -> tuple[Engine, RoundResult]:
        engine = Engine(bundle, bits=2)
        calib = BitFlipCalibrator(bundle, greedy_proposer(), FlipConfig(0.3, iterations=8))
        return engine, calib.run_round(engine, ds.X_train, y, seed=1, base=base)

    current = Engine(bundle, bits=2).predict(ds.X_test)[0]
    kept, result = round_(None)
    assert result.decision.accepted
    after = kept.predict(ds.X_test)[0]
    assert (after != current).any()
    # the training domain's samples labelled as the current model sees them: any change loses
    engine, result = round_((ds.X_test, current, router))
    assert not result.decision.accepted and "training-domain anchors" in result.decision.reason
    assert len(routed) == 2 and routed[0] is engine and routed[1] is not engine
    # labelled as the candidate sees them: it wins, the round is kept
    engine, result = round_((ds.X_test, after, router))
    assert result.decision.accepted


def test_with_nothing_unseen_only_a_lenient_round_is_kept_on_a_recent_gain(
    basicmotions_bundle: Path,
) -> None:
    """After a kept correction with every labelled sample in the buffer (none unseen): a
    round on an adapted domain (``lenient``) is kept when the drift's labelled samples
    gain; on the training domain it is not."""
    bundle = load_bundle(basicmotions_bundle)
    extras = {k: v for k, v in bundle.extras.items() if not k.startswith("qcore_")}
    bundle = dataclasses.replace(bundle, extras=extras)
    ds = load_dataset("basicmotions")
    y = np.zeros_like(ds.y_train)  # the buffer pulls everything towards class 0
    recent = (ds.X_train, y)  # ... and so do the drift's labelled samples
    nothing = (ds.X_train[:0], y[:0])

    def round_(lenient: bool) -> RoundResult:
        engine = Engine(bundle, bits=2)
        calib = BitFlipCalibrator(bundle, greedy_proposer(), FlipConfig(0.3, iterations=8))
        return calib.run_round(
            engine, ds.X_train, y, seed=1, recent=recent, unseen=nothing, lenient=lenient
        )

    strict = round_(False)
    assert not strict.decision.accepted and "wins 0, loses 0" in strict.decision.reason
    assert round_(True).decision.accepted


def test_a_lenient_round_that_costs_the_anchors_confidence_is_not_kept(
    basicmotions_bundle: Path,
) -> None:
    """Nothing unseen, the drift's labelled samples gain (0.25 -> 1.0), held-out plus
    anchor soft accuracy higher, but the anchors lose confidence (one of class 1 among
    class 0, anchor tolerance 1): the round fits the replay; kept before
    :func:`recent_gain` (issue 17, bench/results/recover.md)."""
    bundle = load_bundle(basicmotions_bundle)
    ds = load_dataset("basicmotions")
    y = np.zeros_like(ds.y_train)  # the buffer and the drift's labels pull towards class 0
    calib = BitFlipCalibrator(bundle, greedy_proposer(), FlipConfig(0.3, 8, anchor_tolerance=1.0))
    pick = np.concatenate([np.flatnonzero(ds.y_test == 0), np.flatnonzero(ds.y_test != 0)[:1]])
    calib.anchor_X, calib.anchor_y = ds.X_test[pick], ds.y_test[pick]
    engine = Engine(bundle, bits=4)
    result = calib.run_round(
        engine,
        ds.X_train,
        y,
        1,
        recent=(ds.X_train, y),
        unseen=(ds.X_train[:0], y[:0]),
        lenient=True,
    )
    assert not result.decision.accepted and "wins 0, loses 0" in result.decision.reason
    assert engine.model_version == bundle.model_version


def test_recent_gain_needs_a_strict_rise_and_calm_anchors() -> None:
    y = np.array([0, 1])
    sure, unsure = np.array([[4.0, 0.0], [0.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    assert recent_gain([0.5, 0.75], (unsure, sure, y))
    assert not recent_gain([0.5, 0.5], (unsure, sure, y))  # a tie is no gain
    assert not recent_gain([0.5, 0.75], (sure, unsure, y))  # the anchors lost confidence
    assert recent_gain([0.5, 0.75], (sure[:0], sure[:0], y[:0]))  # no anchors: no veto


def test_recent_guard_withdraws_only_a_loss_beyond_the_tolerance() -> None:
    y = np.array([0, 1, 1, 0])
    right = np.eye(2)[y]
    one_wrong = right.copy()
    one_wrong[0] = [0.0, 1.0]
    passed = gate.decide(0.5, 0.8, 4, "accuracy")
    assert gate.guard_recent(passed, (right, right, y)).accepted
    vetoed = gate.guard_recent(passed, (right, one_wrong, y))
    assert not vetoed.accepted and vetoed.reason == "worse on recent labelled samples"
    assert gate.guard_recent(passed, (right, one_wrong, y), tolerance=0.25).accepted
    assert gate.guard_recent(passed, (right[:0], one_wrong[:0], y[:0])).accepted
    rejected = gate.decide(0.8, 0.5, 4, "accuracy")
    assert gate.guard_recent(rejected, (right, right, y)) is rejected


def test_guard_withdraws_a_round_that_forgets_the_anchors() -> None:
    X = np.arange(10, dtype=np.float32)[:, None]
    labels = (X[:, 0] >= 5).astype(np.int64)

    def logits(margin: float, flip_first: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        def f(a: np.ndarray) -> np.ndarray:
            sign = np.where(a[:, 0] >= 5, 1.0, -1.0)
            sign[:flip_first] = 1.0  # wrong on the first ones
            return np.stack([-margin * sign, margin * sign], axis=1)

        return f

    def guard(
        decision: gate.GateDecision,
        current: Callable[[np.ndarray], np.ndarray],
        candidate: Callable[[np.ndarray], np.ndarray],
        anchors: int = 10,
    ) -> gate.GateDecision:
        held = (current(X[:4]), candidate(X[:4]), labels[:4])
        pre = (current(X[:anchors]), candidate(X[:anchors]), labels[:anchors])
        return gate.guard(decision, held, pre)

    passed = gate.decide(0.5, 0.8, 4, "accuracy")
    assert passed.accepted
    current, better = logits(1.0), logits(3.0)
    assert guard(passed, current, better).accepted
    assert not guard(passed, current, current).accepted  # no gain
    forgets = logits(3.0, flip_first=5)  # all five class-0 anchors now wrong
    vetoed = guard(passed, current, forgets)
    assert not vetoed.accepted and vetoed.reason == "worse on pre-drift anchors"
    # surer on the held-out part, much less sure on the anchors: no net gain
    unsure = logits(0.2)
    surer_held = lambda a: np.where(a[:, :1] < 4, better(a), unsure(a))  # noqa: E731
    vetoed = guard(passed, current, surer_held)
    assert not vetoed.accepted and "soft accuracy" in vetoed.reason
    assert guard(passed, current, surer_held, anchors=0).accepted
    rejected = gate.decide(0.8, 0.5, 4, "accuracy")
    assert not guard(rejected, current, better).accepted


def test_gate_scores_on_labelled_samples_when_there_are_enough(basicmotions_bundle: Path) -> None:
    calib = BitFlipCalibrator(load_bundle(basicmotions_bundle), greedy_proposer(), FlipConfig())
    labelled = np.arange(40) % 3 == 0  # 14 labelled: 4 held out, the minimum
    cal, hold, all_labelled = calib._split(40, labelled, seed=3)
    assert all_labelled and labelled[hold].all() and len(hold) == 4
    assert sorted([*cal, *hold]) == list(range(40))
    cal, hold, all_labelled = calib._split(40, np.arange(40) % 5 == 0, seed=3)  # 8: too few
    assert len(hold) == 12 and not all_labelled and len(set(cal) | set(hold)) == 40


def test_hidden_task_step_pulls_drifted_samples_towards_class_prototypes(
    basicmotions_bundle: Path,
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    quant = bundle.quant[8]
    ds = load_dataset("basicmotions")
    calib = BitFlipCalibrator(bundle, greedy_proposer())
    drifted = ds.X_test[:16] + 1.5 * ds.X_test[:16].std(axis=2, keepdims=True)
    X = np.concatenate([drifted, calib.anchor_X])
    y = np.concatenate([ds.y_test[:16], calib.anchor_y])
    anchors = np.arange(len(X)) >= 16
    codes = calib.deployed_codes(8)
    residuals = calib.residuals(8)
    task = FEATURES.index("task_step")

    def distance(codes: list[np.ndarray]) -> float:  # first layer, drifted samples
        _, tr = calib.trace(8, codes, X)
        m = tr[0].out_mean
        protos = {c: m[anchors & (y == c)].mean(axis=0) for c in np.unique(y[anchors])}
        return float(np.mean([np.abs(m[i] - protos[y[i]]).sum() for i in range(16)]))

    logits, traces = calib.trace(8, codes, X)
    feats = layer_features(bundle, quant, codes, codes, residuals, traces, logits, y, anchors)
    no_anchor = layer_features(bundle, quant, codes, codes, residuals, traces, logits, y)
    assert all(np.all(f[..., task] == 0) for f in no_anchor[:-1])
    step = feats[0][..., task]
    assert np.any(step != 0)
    top = np.abs(step) >= np.quantile(np.abs(step), 0.95)
    moved = [np.where(top, np.sign(step), 0).astype(np.int8)] + [
        np.zeros_like(q) for q in codes[1:]
    ]
    assert distance(apply_flips(codes, moved, 8)) < distance(codes)


def test_flipnet_round_trips_through_bundle_extras() -> None:
    rng = np.random.default_rng(0)
    f, h = len(FEATURES), 6
    net = FlipNet(
        rng.normal(size=(f, h)),
        rng.normal(size=h),
        rng.normal(size=(h, h)),
        rng.normal(size=h),
        rng.normal(size=(h, 3)),
        rng.normal(size=3),
        np.zeros(f),
        np.ones(f),
    )
    again = FlipNet.from_extras(net.to_extras())
    assert again is not None
    x = rng.normal(size=(4, 5, f)).astype(np.float32)
    np.testing.assert_allclose(again.logits(x), net.logits(x), rtol=1e-5, atol=1e-5)
    assert FlipNet.from_extras({}) is None
    with pytest.raises(ValueError, match="features"):
        FlipNet(
            np.zeros((3, h)),
            *[getattr(net, k) for k in ("b1", "w2", "b2", "w3", "b3")],
            np.zeros(3),
            np.ones(3),
        )


def test_flipnet_proposes_its_most_likely_action_with_the_confidence_of_a_flip() -> None:
    f = len(FEATURES)
    # logits (x0, 0, x1): every action wins somewhere
    w1 = np.zeros((f, 4))
    w1[0, 0], w1[0, 1], w1[1, 2], w1[1, 3] = 1, -1, 1, -1
    w3 = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]])
    net = FlipNet(w1, np.zeros(4), np.eye(4), np.zeros(4), w3, np.zeros(3), np.zeros(f), np.ones(f))
    x = np.random.default_rng(0).normal(size=(40, 5, f)).astype(np.float32)
    action, conf = net.propose(x)
    z = net.logits(x)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    np.testing.assert_array_equal(action, np.array([-1, 0, 1])[z.argmax(axis=-1)])
    flip = action != 0
    assert flip.any() and (~flip).any()
    np.testing.assert_allclose(conf[flip], p.max(axis=-1)[flip], rtol=1e-5)
    assert np.all(conf[~flip] == 0)


def test_device_flip_path_never_imports_torch(basicmotions_bundle: Path) -> None:
    code = f"""
import sys
from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.flip_round import BitFlipCalibrator, random_proposer
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine
b = load_bundle({str(basicmotions_bundle)!r})
ds = load_dataset("basicmotions")
e = Engine(b, bits=4)
BitFlipCalibrator(b, random_proposer(0)).run_round(e, ds.X_test, ds.y_test)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_random_proposer_is_seeded() -> None:
    feats = [np.zeros((3, 4, len(FEATURES)))]
    a, b = random_proposer(5)(feats), random_proposer(5)(feats)
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_the_training_domain_check_uses_anchors_the_round_does_not_fit(
    basicmotions_bundle: Path,
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    calib = BitFlipCalibrator(bundle, greedy_proposer())
    n = len(calib.anchor_y)
    assert n >= 4
    X = calib.anchor_X * 2.0  # the training-domain rows of the same anchors
    fit, base = calib._base_split((X, calib.anchor_y, lambda e: e.predict_logits), seed=3)
    assert base is not None
    check = np.setdiff1d(np.arange(n), fit)
    assert 0 < len(fit) < n and len(base[1]) == len(check)
    np.testing.assert_array_equal(base[0], X[check])  # the rows the round never fits
    np.testing.assert_array_equal(base[1], calib.anchor_y[check])
    # no check, or one not aligned with the anchors: every anchor fits
    assert len(calib._base_split(None, 3)[0]) == n
    fit, same = calib._base_split((X[:2], calib.anchor_y[:2], lambda e: e.predict_logits), 3)
    assert len(fit) == n and same is not None and len(same[1]) == 2
