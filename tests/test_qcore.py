"""QCore: miss counting, proportional draws, the on-device buffer (bounds, state, labels)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from support.qcore import calibration_split

from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.qcore import (
    RIGHT,
    SOURCE_STREAM,
    SOURCE_TRAIN,
    UNKNOWN,
    WRONG,
    BufferConfig,
    QCoreBuffer,
)
from edge_agent.calibrate.qcore_miss import (
    difficulty,
    draw_proportional,
    forgetting_events,
    neighbour_bits,
)
from edge_agent.service.config import ConfigError, parse_config

SHAPE = (3, 10)


# ---------------------------------------------------------------- miss counting


def test_forgetting_events_on_hand_made_sequences() -> None:
    seqs = {
        (1, 1, 1, 1): 0,
        (0, 0, 0, 0): 0,
        (1, 0, 1, 0): 2,
        (0, 1, 1, 0): 1,
        (1, 0, 0, 1): 1,
        (0, 1, 0, 1, 0, 1): 2,
        (1,): 0,
    }
    for s, expected in seqs.items():
        assert forgetting_events(np.array(s, dtype=bool)[:, None])[0] == expected, s
    many = np.array(list(seqs)[:5], dtype=bool).T  # (checks, samples): the 4-long ones at once
    assert forgetting_events(many).tolist() == [0, 0, 2, 1, 1]


def test_difficulty_sums_bit_widths_and_never_correct() -> None:
    c8 = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1]], dtype=bool)  # events 0, never, 1
    c2 = np.array([[0, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=bool)  # never, 1, 1
    d = difficulty({8: c8, 2: c2}, never_correct=50)
    assert d.tolist() == [50.0, 51.0, 2.0]
    assert difficulty({8: c8}, never_correct=7).tolist() == [0.0, 7.0, 1.0]
    with pytest.raises(ValueError):
        difficulty({})


# ---------------------------------------------------------------- sampling


def _chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def test_single_draws_are_proportional_to_difficulty() -> None:
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0])
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.zeros(len(w))
    for _ in range(n):
        counts[draw_proportional(w, 1, rng, fill=False)] += 1
    assert counts[4] == 0  # zero difficulty is never drawn
    pos = w > 0
    # chi-square with 4 degrees of freedom: 18.47 is the 0.1 % critical value
    assert _chi2(counts[pos], n * w[pos] / w.sum()) < 18.47


def test_draws_without_replacement_follow_successive_sampling() -> None:
    w = np.array([1.0, 2.0, 3.0, 6.0])
    total = w.sum()
    incl = np.zeros(len(w))  # exact inclusion probabilities of two successive draws
    for i, j in itertools.permutations(range(len(w)), 2):
        p = w[i] / total * w[j] / (total - w[i])
        incl[i] += p
        incl[j] += p
    rng = np.random.default_rng(1)
    n = 20000
    counts = np.zeros(len(w))
    for _ in range(n):
        idx = draw_proportional(w, 2, rng)
        assert len(idx) == 2 and len(set(idx.tolist())) == 2
        counts[idx] += 1
    # each item's inclusion count is binomial: 4 one-degree chi-square terms, 0.1 % each
    for c, p in zip(counts, incl, strict=True):
        assert (c - n * p) ** 2 / (n * p * (1 - p)) < 10.83


def test_fill_and_zero_difficulty() -> None:
    w = np.array([0.0, 5.0, 0.0, 0.0, 1.0])
    rng = np.random.default_rng(2)
    assert draw_proportional(w, 4, rng, fill=False).tolist() == [1, 4]
    idx = draw_proportional(w, 4, rng, fill=True)
    assert len(idx) == 4 and {1, 4} <= set(idx.tolist())
    assert draw_proportional(w, 10, rng).tolist() == [0, 1, 2, 3, 4]
    assert len(draw_proportional(np.zeros(5), 3, rng)) == 3
    assert len(draw_proportional(np.zeros(5), 3, rng, fill=False)) == 0
    with pytest.raises(ValueError):
        draw_proportional(np.array([1.0, -1.0]), 1, rng)


def test_class_balanced_draw() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 20)
    w = np.where(labels == 0, 100.0, 1.0)  # class 0 would dominate an unbalanced draw
    for _ in range(20):
        idx = draw_proportional(w, 9, rng, labels=labels)
        assert np.bincount(labels[idx], minlength=3).tolist() == [3, 3, 3]
    # a class short of positive-difficulty samples gives its slots to the others
    w2 = np.where(labels == 2, 0.0, 1.0)
    w2[40] = 1.0
    idx = draw_proportional(w2, 9, rng, labels=labels, fill=False)
    assert len(idx) == 9 and np.sum(labels[idx] == 2) == 1
    # with fill, its own zero-difficulty samples keep the balance
    idx = draw_proportional(w2, 9, rng, labels=labels, fill=True)
    assert np.bincount(labels[idx], minlength=3).tolist() == [3, 3, 3] and 40 in idx
    # a class with too few samples at all gives its slots to the others
    small = np.concatenate([np.repeat([0, 1], 20), [2]])
    idx = draw_proportional(np.ones(41), 9, rng, labels=small)
    assert len(idx) == 9 and 40 in idx


# ---------------------------------------------------------------- the buffer


def _chunk(rng: np.random.Generator, m: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(m, *SHAPE)).astype(np.float32), rng.integers(0, classes, m)


def _by_feature(offset: float = 0.0):
    """A deterministic 'model': class from the sign pattern of two input features."""

    def predict(x: np.ndarray) -> np.ndarray:
        s = x[:, 0, 0] + offset
        return np.where(s < -0.5, 0, np.where(s < 0.5, 1, 2)).astype(np.int64)

    return predict


def test_bounds_always_hold() -> None:
    rng = np.random.default_rng(4)
    per = QCoreBuffer(SHAPE, (8, 4)).bytes_per_sample
    for cfg in (
        BufferConfig(max_samples=16, max_bytes=1 << 20),
        BufferConfig(max_samples=1000, max_bytes=7 * per + 3),
        BufferConfig(max_samples=5, max_bytes=5 * per, class_balance=False, fill=False),
        BufferConfig(max_samples=0),
    ):
        buf = QCoreBuffer(SHAPE, (8, 4), cfg, seed=1)
        for r in range(12):
            x, y = _chunk(rng, int(rng.integers(1, 30)))
            lab = rng.random(len(y)) < 0.5
            preds = {8: _by_feature(0.1 * r), 4: _by_feature(-0.1 * r)}
            res = buf.update(x, y, lab, preds, _by_feature(), now=r, seqs=np.arange(len(y)))
            assert len(buf) <= buf.capacity == min(cfg.max_samples, cfg.max_bytes // per)
            assert buf.nbytes <= cfg.max_bytes
            assert buf.nbytes == len(buf) * buf.bytes_per_sample
            assert res.size == len(buf)
        if cfg.fill and cfg.max_samples:
            assert len(buf) == buf.capacity


def test_new_sample_counts_and_forgetting_on_buffer() -> None:
    x = np.zeros((4, *SHAPE), np.float32)
    x[:, 0, 0] = [-1.0, 0.0, 1.0, 1.0]  # _by_feature: classes 0, 1, 2, 2
    y = np.array([0, 1, 2, 0])
    fp = _by_feature()  # right on samples 0-2, wrong on 3
    cfg = BufferConfig(max_samples=100, miss_count=1.0, fp_wrong_count=50.0)
    buf = QCoreBuffer(SHAPE, (8, 4), cfg)
    wrong_on_1 = lambda a: np.where(a[:, 0, 0] == 0.0, 0, _by_feature()(a))  # noqa: E731
    res = buf.update(x, y, None, {8: fp, 4: wrong_on_1}, fp, now=1.0, seqs=np.arange(4))
    order = np.argsort(buf.seq)
    # sample 1: 4-bit wrong, FP right -> 1; sample 3: wrong at both, FP wrong -> 2 * 50
    assert buf.misses[order].tolist() == [0.0, 1.0, 0.0, 100.0]
    assert res.new_misses == 3 and res.events == 0 and res.kept_new == 4
    assert buf.last_correct[order].tolist() == [
        [RIGHT, RIGHT],
        [WRONG, RIGHT],
        [RIGHT, RIGHT],
        [WRONG, WRONG],
    ]
    assert (buf.source == SOURCE_STREAM).all() and (buf.time == 1.0).all()
    # next round: the 8-bit model now gets sample 0 wrong -> one forgetting event
    shifted = lambda a: np.where(a[:, 0, 0] == -1.0, 1, _by_feature()(a))  # noqa: E731
    res = buf.update(x[:0], y[:0], None, {8: shifted, 4: wrong_on_1}, fp)
    order = np.argsort(buf.seq)
    assert res.events == 1 and res.new == 0
    assert buf.misses[order].tolist() == [1.0, 1.0, 0.0, 100.0]
    # wrong -> wrong and wrong -> right are no events
    res = buf.update(x[:0], y[:0], None, {8: shifted, 4: fp}, fp)
    assert res.events == 0


def test_a_width_whose_model_kept_its_key_is_asked_only_about_samples_it_has_not_judged() -> None:
    chunks = [_chunk(np.random.default_rng(step), 6) for step in range(4)]
    asked: list[int] = []

    def counting(a: np.ndarray) -> np.ndarray:
        asked.append(len(a))
        return _by_feature(0.3)(a)

    def run(keys: dict[int, str] | None) -> tuple[QCoreBuffer, list[int]]:
        asked.clear()
        buf = QCoreBuffer(SHAPE, (8, 4), BufferConfig(max_samples=10), seed=3)
        for step, (x, y) in enumerate(chunks):
            if step == 2:  # a real label: that sample's correctness is unknown again
                buf.set_label(int(buf.seq[0]), 1)
            predict = {8: _by_feature(), 4: counting}
            buf.update(x, y, None, predict, None, seqs=step * 6 + np.arange(6), keys=keys)
        return buf, list(asked)

    plain, asked_all = run(None)  # no key: every sample at every update
    keyed, asked_some = run({4: "model-a"})
    for name in ("X", "y", "misses", "last_correct", "seq"):
        assert np.array_equal(getattr(plain, name), getattr(keyed, name)), name
    # after its first update the buffer's samples are known: the new 6 (+ the relabelled)
    assert asked_all == [6, 12, 16, 16] and asked_some == [6, 6, 7, 6]
    asked.clear()
    x, y = chunks[0]
    keyed.update(x, y, None, {8: _by_feature(), 4: counting}, None, keys={4: "model-b"})
    assert asked == [16]  # another model at that width: every sample again


def test_old_and_new_compete_by_difficulty() -> None:
    rng = np.random.default_rng(5)
    cfg = BufferConfig(max_samples=8, class_balance=False, fill=False)
    buf = QCoreBuffer(SHAPE, (8,), cfg)
    x, _ = _chunk(rng, 8)
    y = _by_feature()(x)
    # seed: eight hard samples the 8-bit model gets wrong at first (never seen right)
    buf.update(x, (y + 1) % 3, None, {8: _by_feature()}, None)
    assert len(buf) == 8 and (buf.misses == 1).all()
    # an easy chunk (model right everywhere) cannot displace them: difficulty 0
    x2, _ = _chunk(rng, 20)
    res = buf.update(x2, _by_feature()(x2), None, {8: _by_feature()}, None)
    assert res.kept_new == 0 and res.dropped_old == 0
    # a hard chunk competes: the buffer holds a mix, never more than its capacity
    x3, _ = _chunk(rng, 8)
    res = buf.update(x3, (_by_feature()(x3) + 1) % 3, None, {8: _by_feature()}, None)
    assert 0 < res.kept_new < 8 and res.kept_new == res.dropped_old and len(buf) == 8
    # the random-buffer baseline ignores difficulty: easy samples displace hard ones
    rand = QCoreBuffer(SHAPE, (8,), BufferConfig(max_samples=8, class_balance=False, random=True))
    rand.update(x, (y + 1) % 3, None, {8: _by_feature()}, None)
    res = rand.update(x2, _by_feature()(x2), None, {8: _by_feature()}, None)
    assert res.kept_new > 0 and len(rand) == 8


def test_label_free_mode_and_label_feedback() -> None:
    rng = np.random.default_rng(6)
    x, y = _chunk(rng, 10)
    fp = _by_feature()
    q = _by_feature(0.7)  # disagrees with FP on part of the inputs
    buf = QCoreBuffer(SHAPE, (4,), BufferConfig(max_samples=100))
    with pytest.raises(ValueError, match="fp_predict"):
        buf.update(x, None, None, {4: q}, None)
    res = buf.update(x, None, None, {4: q}, fp, now=2.0, seqs=np.arange(100, 110))
    order = np.argsort(buf.seq)
    disagree = q(x) != fp(x)
    assert not buf.labelled.any()
    assert np.array_equal(buf.y[order], fp(x))  # pseudo-labels are FP predictions
    assert np.array_equal(buf.misses[order], disagree.astype(np.float32))  # FP-vs-Q misses
    assert res.new_misses == int(disagree.sum())
    # feedback for seq 103 replaces its pseudo-label
    assert buf.set_label(103, int(y[3]))
    i = int(np.flatnonzero(buf.seq == 103)[0])
    assert buf.labelled[i] and buf.y[i] == y[3] and (buf.last_correct[i] == UNKNOWN).all()
    assert int(buf.labelled.sum()) == 1 and buf.stats()["labelled"] == 1
    assert not buf.set_label(999, 0) and not buf.set_label(-1, 0)
    # mixed chunk: labelled entries keep their label
    lab = np.arange(10) % 2 == 0
    buf.update(x, y, lab, {4: q}, fp, seqs=np.arange(200, 210))
    new = buf.seq >= 200
    expect = np.where(lab, y, fp(x))[buf.seq[new] - 200]
    assert np.array_equal(buf.y[new], expect)
    assert np.array_equal(buf.labelled[new], lab[buf.seq[new] - 200])


def test_state_round_trip_and_validation() -> None:
    rng = np.random.default_rng(7)
    cfg = BufferConfig(max_samples=12)
    buf = QCoreBuffer(SHAPE, (8, 4, 2), cfg, seed=3)
    preds = {8: _by_feature(), 4: _by_feature(0.3), 2: _by_feature(0.9)}
    for r in range(3):
        x, y = _chunk(rng, 10)
        buf.update(
            x, y, rng.random(10) < 0.5, preds, _by_feature(), now=r, seqs=10 * r + np.arange(10)
        )
    state = buf.to_state()
    back = QCoreBuffer.from_state(state, cfg)
    again = back.to_state()
    assert state.keys() == again.keys()
    for k in state:
        assert state[k].dtype == again[k].dtype and np.array_equal(state[k], again[k]), k
    # the restored buffer continues exactly as the original
    x, y = _chunk(rng, 10)
    r1 = buf.update(x, y, None, preds, None, now=9)
    r2 = back.update(x, y, None, preds, None, now=9)
    assert r1 == r2
    for k, v in buf.to_state().items():
        assert np.array_equal(v, back.to_state()[k]), k
    # a smaller capacity on load redraws down to it
    assert len(QCoreBuffer.from_state(state, BufferConfig(max_samples=5))) == 5
    # invalid states name the problem
    bad = dict(state)
    del bad["misses"]
    with pytest.raises(ValueError, match="misses"):
        QCoreBuffer.from_state(bad, cfg)
    bad = {**state, "y": state["y"].astype(np.int32)}
    with pytest.raises(ValueError, match="dtype"):
        QCoreBuffer.from_state(bad, cfg)
    bad = {**state, "last_correct": state["last_correct"][:, :2]}
    with pytest.raises(ValueError, match="shape"):
        QCoreBuffer.from_state(bad, cfg)
    bad = {**state, "misses": -state["misses"] - 1}
    with pytest.raises(ValueError, match="non-negative"):
        QCoreBuffer.from_state(bad, cfg)


def test_new_bit_width_and_calibration_split() -> None:
    rng = np.random.default_rng(8)
    buf = QCoreBuffer(SHAPE, (8,), BufferConfig(max_samples=20))
    x, y = _chunk(rng, 10)
    buf.update(x, y, None, {8: _by_feature()}, None)
    buf.update(x[:0], y[:0], None, {4: _by_feature(0.2), 8: _by_feature()}, None)
    assert buf.bits == (4, 8) and buf.last_correct.shape == (10, 2)
    cal, hold = calibration_split(buf, 0.3, seed=0)
    assert len(hold) == 3 and len(cal) == 7
    assert sorted(np.concatenate([cal, hold]).tolist()) == list(range(10))
    st = buf.stats()
    assert st["size"] == 10 and st["stream_fraction"] == 1.0 and st["rounds"] == 2
    assert SOURCE_TRAIN == 0


def test_neighbour_bits() -> None:
    assert neighbour_bits((8, 4, 3, 2), 4) == (3, 4, 8)
    assert neighbour_bits((8, 4, 3, 2), 8) == (4, 8)
    assert neighbour_bits((8, 4, 3, 2), 2, k=2) == (2, 3, 4)
    assert neighbour_bits((4,), 4) == (4,)
    with pytest.raises(ValueError):
        neighbour_bits((8, 4), 2)


def test_failed_update_leaves_the_buffer_unchanged() -> None:
    rng = np.random.default_rng(9)
    buf = QCoreBuffer(SHAPE, (8, 4), BufferConfig(max_samples=10))
    x, y = _chunk(rng, 6)
    buf.update(x, y, None, {8: _by_feature(), 4: _by_feature()}, None)
    before = buf.to_state()

    def broken(a: np.ndarray) -> np.ndarray:
        raise RuntimeError("engine failed")

    with pytest.raises(RuntimeError):
        buf.update(x, y, None, {8: _by_feature(0.9), 4: broken}, None)
    for k, v in buf.to_state().items():
        assert np.array_equal(v, before[k]), k


def test_the_agent_redraws_its_buffer_at_random_unless_told_qcore() -> None:
    assert CalibrationConfig().buffer_config().random  # the winner of bench/round_cost.py
    assert not CalibrationConfig(buffer_draw="qcore").buffer_config().random
    assert parse_config('[calibration]\nbuffer_draw = "qcore"').calibration.buffer_draw == "qcore"
    with pytest.raises(ConfigError, match="buffer_draw"):
        parse_config('[calibration]\nbuffer_draw = "newest"')
