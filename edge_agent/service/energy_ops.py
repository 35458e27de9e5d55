"""The agent's energy policy at work: the bit-width to run at, and QAT bursts with their
candidate pool. A part of :class:`edge_agent.service.agent.Agent`."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.bundle_io import to_bytes

if TYPE_CHECKING:
    from edge_agent.calibrate.burst_scheduler import BurstScheduler
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.energy import EnergyDecision, EnergyMonitor
    from edge_agent.service.config import AgentConfig
    from edge_agent.service.metrics import Metrics
    from edge_agent.service.model import Model

log = logging.getLogger("edge_agent.agent")

BURST_RECENT = 256  # recent unlabelled stream samples offered to a QAT burst


class EnergyOps:
    """Bit-width switches and QAT bursts, driven by the energy policy."""

    if TYPE_CHECKING:  # what the other parts of Agent provide
        cfg: AgentConfig
        metrics: Metrics
        model: Model
        calibration: CalibrationController | None
        energy: EnergyMonitor
        bursts: BurstScheduler | None
        _energy: EnergyDecision | None
        _recent: OrderedDict[tuple[str, int], tuple[np.ndarray, int]]

        def _save_model(self, data: bytes) -> bool: ...
        def _start_calibration(self, state: dict[str, Any] | None, carry: bool = False) -> None: ...

    def _energy_tick(self) -> None:
        """Apply the energy policy: the bit-width to run at, and QAT bursts."""
        eng = self.model.engine
        try:
            d = self.energy.decide(eng.available_bits, self.model.bundle.default_bits)
        except Exception:  # a broken sensor must never stop the agent
            self.metrics.inc("energy_errors")
            log.exception("energy policy failed")
            return
        self._energy = d
        if self.cfg.bursts.switch_bits and d.bits != eng.bits:
            eng.set_bits(d.bits)
            self.metrics.inc("bit_switches")
        if self.bursts is None:
            return
        cal = self.calibration  # bursts, like rounds, wait for the drift signal
        current = cal.bundle.with_codes(eng.bits, eng.codes()) if cal else self.model.bundle
        wanted = cal.burst_wanted(self.bursts.counters.started) if cal else True
        accepted = self.bursts.tick(d, current, eng.predict_classes, self._burst_pool, wanted)
        if accepted is None or accepted.engine is None or accepted.bundle is None:
            return
        self._save_model(to_bytes(accepted.bundle))
        state = self.calibration.state() if self.calibration else None
        self.model = replace(self.model, engine=accepted.engine, bundle=accepted.bundle)
        self._start_calibration(state, carry=True)  # the buffer and the drift signal carry over
        self.metrics.inc("bursts_accepted")
        log.info("QAT burst accepted: model %s", accepted.engine.model_version)

    def _burst_pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A burst's candidate pool: the QCore buffer plus recent unlabelled stream samples
        with the FP model's predictions as targets. Called from the burst scheduler's
        worker thread: ``list(dict.values())`` copies the main thread's window in one C
        call under the GIL."""
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        cal = self.calibration
        if cal is not None:
            parts.append(cal.pool())
        recent = [x for x, _ in list(self._recent.values())[-BURST_RECENT:]]
        if recent and cal is not None:
            X = np.stack(recent)
            parts.append((X, cal.fp_predict(X), np.zeros(len(X), dtype=bool)))
        if not parts:
            shape = (0, *self.model.engine.input_shape)
            return (np.zeros(shape, np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )
