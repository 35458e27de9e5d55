"""The gate's sample-count rule, the held-out fallback, and one verdict per round in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_service_support import make_bundle

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate import gate
from edge_agent.calibrate.flip_round import BitFlipCalibrator, FlipConfig, Proposal
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine


def test_decide_rejects_fewer_held_out_samples_than_required() -> None:
    few = gate.decide(0.25, 1.0, 3, "accuracy", min_samples=4)  # better, but on 3 samples
    assert not few.accepted
    assert few.reason == "only 3 held-out samples (need 4)"
    enough = gate.decide(0.25, 1.0, 4, "accuracy", min_samples=4)
    assert enough.accepted and enough.reason == "not worse on held-out data"


def _propose_nothing(feats: list[np.ndarray]) -> Proposal:
    return [(np.zeros(f.shape[:2], np.int8), np.zeros(f.shape[:2])) for f in feats]


def _round(tmp: Path, n: int, n_labelled: int) -> gate.GateDecision:
    bundle = load_bundle(make_bundle(tmp / "random.eab"))  # no training: random weights
    ds = load_dataset("basicmotions")
    labelled = np.zeros(n, dtype=bool)
    labelled[:n_labelled] = True
    cfg = FlipConfig(holdout_fraction=0.3, min_holdout=4)
    calib = BitFlipCalibrator(bundle, _propose_nothing, cfg)
    result = calib.run_round(
        Engine(bundle, bits=4), ds.X_test[:n], ds.y_test[:n], seed=0, labelled=labelled
    )
    return result.decision


def test_fewer_than_4_labelled_held_out_falls_back_to_all_samples(
    tmp_path: Path,
) -> None:
    # 14 labelled: round(14 * 0.3) = 4 >= 4, so the gate holds out 4 labelled samples
    d = _round(tmp_path, 20, 14)
    assert (d.n, d.metric) == (4, "accuracy")
    # 13 labelled: round(13 * 0.3) = 4 still; 12: round(3.6) = 4; 11: round(3.3) = 3 < 4:
    # held out from all 20 samples instead, round(20 * 0.3) = 6, not all of them labelled
    d = _round(tmp_path, 20, 11)
    assert d.n == 6
    # 2 of 10 labelled: fallback to all 10, 3 held out, fewer than min_holdout = 4
    d = _round(tmp_path, 10, 2)
    assert (d.n, d.metric) == (3, "target_agreement")
    assert not d.accepted


def test_a_round_logs_one_verdict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    d = _round(tmp_path, 20, 14)  # held-out accuracy ties, but nothing flipped
    assert not d.accepted and d.reason == "no flip proposed"
    text = caplog.text
    assert "gate accepted" not in text, text
    assert "rolled back" in text and "no flip proposed" in text, text


def test_guard_unseen_keeps_only_more_wins_than_losses() -> None:
    y = np.array([0, 1, 2, 0])
    now = np.eye(3)[[0, 1, 0, 1]]  # right on samples 0 and 1
    accepted = gate.decide(0.5, 0.75, 8, "accuracy")
    cases = {
        "wins": (np.eye(3)[[0, 1, 2, 1]], True),  # wins sample 2
        "tie": (np.eye(3)[[0, 0, 2, 1]], False),  # wins 2, loses 1
        "same": (now, False),  # no evidence that it helps
        "loses": (np.eye(3)[[1, 1, 0, 1]], False),
    }
    for name, (new, keep) in cases.items():
        assert gate.guard_unseen(accepted, (now, new, y)).accepted == keep, name
    empty = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64))
    d = gate.guard_unseen(accepted, empty)
    assert not d.accepted and "wins 0, loses 0" in d.reason
    refused = gate.decide(0.5, 0.25, 8, "accuracy")
    assert gate.guard_unseen(refused, (now, np.eye(3)[[0, 1, 2, 0]], y)) is refused
    # with fewer than min_samples unseen to judge on: losing none while the drift's
    # labelled samples gain is enough; with enough of them, or a loss, it is not
    assert gate.guard_unseen(accepted, empty, recent_rose=True).accepted
    assert not gate.guard_unseen(accepted, empty, recent_rose=False).accepted
    one = (now[:1], now[:1], y[:1])
    assert gate.guard_unseen(accepted, one, recent_rose=True, min_samples=2).accepted
    assert not gate.guard_unseen(accepted, (now, now, y), recent_rose=True).accepted
    lose = (now[:1], np.eye(3)[[1]], y[:1])
    assert not gate.guard_unseen(accepted, lose, recent_rose=True, min_samples=2).accepted


def test_guard_base_refuses_a_net_loss_on_the_training_domain() -> None:
    y = np.array([0, 1, 2, 0])
    now = np.eye(3)[[0, 1, 0, 1]]  # right on samples 0 and 1
    accepted = gate.decide(0.5, 0.75, 8, "accuracy")
    cases = {
        "wins": (np.eye(3)[[0, 1, 2, 1]], True),
        "tie": (np.eye(3)[[0, 0, 2, 1]], True),  # wins 2, loses 1: no net loss
        "same": (now, True),  # unlike the unseen guard: the training domain only may not lose
        "loses": (np.eye(3)[[1, 1, 0, 1]], False),
    }
    for name, (new, keep) in cases.items():
        assert gate.guard_base(accepted, (now, new, y)).accepted == keep, name
    d = gate.guard_base(accepted, (now, np.eye(3)[[1, 1, 0, 1]], y))
    assert "wins 0, loses 1 training-domain anchors" in d.reason
    empty = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64))
    assert gate.guard_base(accepted, empty) is accepted
    refused = gate.decide(0.5, 0.25, 8, "accuracy")
    assert gate.guard_base(refused, (now, np.eye(3)[[0, 1, 2, 0]], y)) is refused
