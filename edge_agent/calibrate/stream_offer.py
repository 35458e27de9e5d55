"""How the agent hands one processed batch to the calibration: every sample and every
matched label, in arrival order, with the batch's drift scores computed in one call."""

from __future__ import annotations

import numpy as np

from edge_agent.calibrate.controller import CalibrationController
from edge_agent.engine.engine import ModelKey
from edge_agent.ingest.protocol import Feedback


def offer_batch(
    cal: CalibrationController,
    inferred: tuple[np.ndarray, np.ndarray, ModelKey] | None,
    heard: list[tuple[int, int | None, int] | Feedback],
) -> None:
    """Offer a batch's samples and matched labels to the calibration in arrival order
    (drift scores of all its samples in one call first, from the inference's logits
    where they are the drift model's)."""
    if inferred is None:
        for ev in heard:
            assert isinstance(ev, Feedback)
            cal.feedback(ev.seq, ev.label)
        return
    X = inferred[0]
    cal.prescore(*inferred)
    run: list[tuple[int, int | None, int]] = []  # consecutive samples: one call
    events: list[tuple[int, int | None, int] | Feedback | None] = [*heard, None]
    for event in events:  # None: flushes the last run
        if isinstance(event, tuple):
            run.append(event)
            continue
        if run:  # consecutive rows of X: a view
            X_run = X[run[0][0] : run[-1][0] + 1]
            cal.observe_many(X_run, [lab for _, lab, _ in run], [s for _, _, s in run])
            run = []
        if event is not None:
            cal.feedback(event.seq, event.label)
