"""Sequence numbers span the protocol's whole range, 0..2^64-1, in calibration too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.calibrate.qcore import SOURCE_STREAM
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine


def test_rounds_and_late_labels_work_with_seq_at_and_above_2_63(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    ctl = CalibrationController(bundle, CalibrationConfig(chunk=8, unlabelled_every=1))
    ds = load_dataset("basicmotions")
    engine = Engine(bundle)
    base = 2**64 - 8  # the last 8 sequence numbers; 2^63 and above overflowed int64
    X = Drift.parse("rotation@0").apply_stream(ds.X_test)  # drifted: they win places
    for i in range(8):
        ctl.observe(X[i], None, base + i)
    ctl.run(engine)  # the buffer update raised OverflowError
    assert ctl.stream.seen == 8
    # a late label for the largest seq reaches the buffered sample, if it was kept
    buf = ctl.buffer
    stream = buf.source == SOURCE_STREAM
    seqs = buf.seq.view(np.uint64)
    kept = [int(s) for s in seqs[stream]]
    assert kept and all(s >= base for s in kept)
    for s in kept:
        assert buf.set_label(s, 1)
        assert buf.labelled[stream & (seqs == s)].all()
    assert not buf.set_label(base - 1, 1)  # not buffered
