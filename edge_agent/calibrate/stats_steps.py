"""The statistics rung's steps inside the calibration controller
(:class:`edge_agent.calibrate.controller.CalibrationController`): a round on a drift
alarm's window, the return to a domain the bank holds, and adopting a kept correction.
A part of the controller (its state is the controller's)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.calibrate import gate, stats_round, stats_rung
from edge_agent.calibrate.domain_params import load_codes
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.qcore import EXTRA_X
from edge_agent.engine.engine import Engine

if TYPE_CHECKING:
    from edge_agent.bundle import Bundle
    from edge_agent.calibrate.calibration_config import CalibrationConfig
    from edge_agent.calibrate.domains import Domain
    from edge_agent.calibrate.flip_round import BitFlipCalibrator
    from edge_agent.calibrate.routing import DomainRouting
    from edge_agent.calibrate.schedule import Job

log = logging.getLogger("edge_agent.calibrate.controller")

RETURN_SHARE = 0.8  # of an alarm's window routed to a held domain: a return to it


class StatsSteps:
    """The statistics rung as the controller runs it."""

    if TYPE_CHECKING:  # what the controller provides
        bundle: Bundle
        cfg: CalibrationConfig
        calibrator: BitFlipCalibrator
        routing: DomainRouting | None
        train_stats: stats_rung.Statistics | None
        _scratch: Engine | None
        _neighbours: dict[int, Engine]

        def _count(self, name: str, n: int = 1) -> None: ...

        def _drop_labels(self, engine: Engine) -> None: ...

    def _stats_round(self, engine: Engine, job: Job) -> RoundResult:
        assert self.train_stats is not None and job.X is not None
        back = None if self.routing is None else self.routing.returning(job.X, RETURN_SHARE)
        if back is not None:  # a domain the bank holds: its correction, not a new one
            return self._return_to(engine, *back, n=len(job.X))
        if self._scratch is None:  # holds every bit-width: the correction covers them all
            self._scratch = Engine(self.bundle, bits=engine.bits, scratch=True)
        scratch = self._scratch
        stats_round.sync(scratch, engine, stats_rung.hidden_layers(self.bundle))
        empty = (np.zeros((0, *self.bundle.input_shape), np.float32), np.zeros(0, np.int64))
        result, corr = stats_round.run_stats_round(
            engine,
            scratch,
            self.bundle,
            self.train_stats,
            job.X,
            job.recent or empty,
            stats_round.StatsConfig(min_labelled=self.cfg.flip.min_holdout),
            version_of=lambda c: self._corrected(c, engine).model_version,
            predictors=None if self.routing is None else self._gate_predictors(engine, job),
        )
        if corr is not None:
            if self.routing is not None:
                self.routing.keep(engine, job.X, job.at)
            self._adopt(corr)
        return result

    def _return_to(self, engine: Engine, domain: Domain, share: float, n: int) -> RoundResult:
        """Make ``domain`` live again: its correction and its own weights into every
        bit-width of ``engine`` and the bundle, as a kept statistics round would (counted
        ``domain_returns``); the domain live until now keeps the weights it ran, and a
        label correction learnt meanwhile is dropped (it was fitted to another domain)."""
        assert self.routing is not None
        t0 = time.thread_time()
        self._drop_labels(engine)
        corr = domain.params.correction(engine.bits)
        self.routing.returned(domain, engine)
        load_codes(engine, domain.params.codes)
        saved = self._corrected(corr, engine)
        version = stats_rung.apply(engine, corr, version=saved.model_version)
        self._adopt(corr)
        self._count("domain_returns")
        why = f"{share:.0%} of the window belongs to {domain.name}: its correction again"
        log.info("statistics round on %d samples: %s", n, why)
        decision = gate.GateDecision(True, "routing", share, share, n, why)
        nan = float("nan")
        return RoundResult(decision, 0, 1, nan, nan, time.thread_time() - t0, version, "stats")

    def _adopt(self, corr: stats_rung.Correction) -> None:
        """A kept (or returned-to) correction becomes the controller's bundle: the flip
        rounds' model, their anchors in its input domain, fresh neighbour widths."""
        self.bundle = self._corrected(corr)
        self.calibrator.set_bundle(self.bundle)
        self.calibrator.anchor_X = self._anchors_for(corr)
        self._neighbours = {}

    def _gate_predictors(self, engine: Engine, job: Job) -> tuple[Any, Any]:
        """The stats gate's (before, after) logits: routed through the bank without and
        with the proposed correction's domain."""
        assert self.routing is not None and self._scratch is not None and job.X is not None
        before = self.routing.predictor(engine).predict_logits
        return before, self.routing.candidate(engine, self._scratch, job.X, job.at)

    def _anchors_for(self, corr: stats_rung.Correction) -> np.ndarray:
        """The bundle's anchors moved into the corrected input domain: the corrected
        normalization gives them exactly what the training normalization gave them, so
        they still show the flip rounds what each class looked like before the drift;
        except in a dead channel, where they read what the dead sensor reads (the
        corrected model sees its training mean there, as on the stream). With their own
        values there, which the correction scales up a hundredfold, the anchors looked
        drifted and a flip round fitted them (watch_side dead channel: held-out 53.6
        after the replay, 69.6 with them dead: ``bench/results/recover.md``)."""
        assert self.train_stats is not None
        X = np.asarray(self.bundle.extras.get(EXTRA_X, self.calibrator.anchor_X), np.float32)
        shape = (1, -1, *(1,) * (X.ndim - 2))
        st = self.train_stats
        z = (X - st.norm_mean.reshape(shape)) / st.norm_std.reshape(shape)
        dead = stats_rung.dead_channels(st, corr.std).reshape(shape)
        z = np.where(dead, st.target[0].reshape(shape), z)
        return (z * corr.std.reshape(shape) + corr.mean.reshape(shape)).astype(np.float32)

    def _corrected(self, corr: stats_rung.Correction, engine: Engine | None = None) -> Bundle:
        """The bundle with a statistics correction in every bit-width (and, given
        ``engine``, its active codes: the bundle the agent saves)."""
        b = stats_rung.corrected_bundle(self.bundle, corr)
        if self.routing is not None:
            b = self.routing.saved(b)
        return b if engine is None else b.with_codes(engine.bits, engine.codes())
