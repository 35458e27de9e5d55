"""The label rung's round inside the calibration controller
(:class:`edge_agent.calibrate.controller.CalibrationController`): fit the class offsets on
a job's labelled samples, gate them leave-one-out, put a kept correction into every
bit-width of the engine and into the bundle the agent saves
(:mod:`edge_agent.calibrate.label_rung`). A part of the controller (its state is the
controller's)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.calibrate import gate, label_rung
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.schedule import distinct

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle
    from edge_agent.calibrate.flip_round import BitFlipCalibrator
    from edge_agent.calibrate.routing import DomainRouting
    from edge_agent.calibrate.schedule import Job
    from edge_agent.engine.engine import Engine

log = logging.getLogger("edge_agent.calibrate.controller")


class LabelSteps:
    """The label rung as the controller runs it."""

    label_cfg = label_rung.LabelConfig()

    if TYPE_CHECKING:  # what the controller provides
        bundle: Bundle
        calibrator: BitFlipCalibrator
        routing: DomainRouting | None
        _scratch: Engine | None
        _neighbours: dict[int, Engine]

        def _count(self, name: str, n: int = 1) -> None: ...

    def _label_round(self, engine: Engine, job: Job) -> RoundResult:
        """One label round on ``job.recent`` (the latest labelled samples, distinct), those
        of them routed to the live domain: the correction is the live domain's alone, and
        a window that spans a change (a return to the training domain after a drift) must
        not fit the new domain's offsets on the old one's samples."""
        t0 = time.thread_time()
        X, y = job.recent if job.recent is not None else (np.zeros(0), np.zeros(0, np.int64))
        if len(y):
            X, y = distinct(X, y)
        if len(y) and self.routing is not None:
            live = self.routing.on_live(X)
            X, y = X[live], y[live]
        current = label_rung.steps_of(self.bundle)
        if len(y) >= self.label_cfg.min_labelled:
            verdict, fix = label_rung.propose(engine, self.bundle, current, X, y, self.label_cfg)
        else:  # too few to fit and hold out: the verdict alone
            verdict, fix = label_rung.Verdict(len(y), 0, 0, 0, 0), None
        ok, why = label_rung.accepted(verdict, self.label_cfg)
        version = None
        if ok and fix is not None:
            new = label_rung.biases(engine, current, fix)
            saved = label_rung.labelled_bundle(self.bundle, new, fix)
            if self.routing is not None:
                saved = self.routing.saved(saved)
            version = label_rung.apply(
                engine, new, version=saved.with_codes(engine.bits, engine.codes()).model_version
            )
            self._adopt_labels(saved)
        n = max(verdict.n, 1)
        decision = gate.GateDecision(
            version is not None,
            "accuracy",
            verdict.live_hits / n,
            verdict.loo_hits / n,
            verdict.n,
            why,
        )
        log.info(
            "label round on %d labelled samples: %s (%s)",
            verdict.n,
            "kept" if version else "rolled back",
            why,
        )
        nan = float("nan")
        cpu = time.thread_time() - t0
        return RoundResult(decision, 0, 1, nan, nan, cpu, version, rung="label")

    def _drop_labels(self, engine: Engine) -> None:
        """Take the label correction out of every bit-width of ``engine`` and the bundle
        (the stream returned to a domain the agent knows: its own labels again)."""
        current = label_rung.steps_of(self.bundle)
        if not any(np.any(s) for s in current.values()):
            return
        zero = {b: np.zeros_like(s) for b, s in current.items()}
        none = label_rung.LabelFix(np.zeros(len(next(iter(zero.values())))), zero)
        new = label_rung.biases(engine, current, none)
        label_rung.apply(engine, new)
        self._adopt_labels(label_rung.labelled_bundle(self.bundle, new, none))
        self._count("label_corrections_dropped")
        log.info("label correction dropped: the stream is back in a domain the agent knows")

    def _adopt_labels(self, bundle: Bundle) -> None:
        """A kept label correction's bundle becomes the controller's: the flip rounds'
        and the statistics rung's scratch models are rebuilt from it."""
        self.bundle = bundle
        self.calibrator.set_bundle(bundle)
        self._scratch = None
        self._neighbours = {}
