"""The agent's part in a fleet: Prometheus exposition, and the status commands
``collect`` (field data for ``edge-agent collect``) and ``reload`` (``edge-agent
rollout``), carried out by the main loop.

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from edge_agent.bundle import SERIES_NORM
from edge_agent.service.field_export import collect_reply

if TYPE_CHECKING:
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.service.config import AgentConfig
    from edge_agent.service.metrics import Metrics
    from edge_agent.service.state import LabelledSample

log = logging.getLogger("edge_agent.agent")


class FleetOps:
    """Metrics exposition and the fleet's status commands."""

    if TYPE_CHECKING:  # what the other parts of Agent provide
        cfg: AgentConfig
        metrics: Metrics
        model: Any
        labelled: deque[LabelledSample]
        calibration: CalibrationController | None
        exporter: Any
        _requests: queue.SimpleQueue[tuple[str, Future[dict[str, Any]]]]

        def status(self) -> dict[str, Any]: ...
        def _reload_config(self) -> str | None: ...
        def _close_io(self, with_status: bool = True) -> None: ...

    def _init_fleet(self) -> None:
        # collect / reload requests from the status thread, carried out by the main loop
        self._requests = queue.SimpleQueue()
        self.exporter = None  # MetricsExporter when [metrics] is on

    def _fleet_dead(self) -> list[str]:
        """The fleet's threads that should run and do not."""
        return ["metrics"] if self.exporter is not None and not self.exporter.alive() else []

    def _stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()

    def _start_exporter(self) -> None:
        """Prometheus exposition, when configured (prometheus_client is imported only then)."""
        if not self.cfg.metrics.enabled:
            return
        from edge_agent.service.prometheus import MetricsExporter

        self.exporter = MetricsExporter(
            self.cfg.metrics, self.status, self.metrics.latency_histogram
        )
        try:
            self.exporter.start()
        except RuntimeError:
            self._close_io()
            raise
        textfile = self.cfg.metrics.textfile
        log.info(
            "metrics: %s",
            ", ".join(filter(None, [self.exporter.url, textfile and f"textfile {textfile}"])),
        )

    def _defer(self, cmd: str) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        self._requests.put((cmd, fut))
        return fut

    def _serve_requests(self) -> None:
        """``collect`` and ``reload`` from the status socket (main thread: it owns the
        labelled log and the model)."""
        while not self._requests.empty():
            cmd, fut = self._requests.get()
            try:
                fut.set_result(self._collect() if cmd == "collect" else self._reload_now())
            except Exception as exc:  # the requester gets the error; the agent goes on
                log.exception("%s failed", cmd)
                fut.set_exception(exc)

    def _reload_now(self) -> dict[str, Any]:
        before = self.model.engine.model_version
        error = self._reload_config()
        after = self.model.engine.model_version
        return {"error": error, "model_version": after, "changed": after != before}

    def _collect(self) -> dict[str, Any]:
        eng = self.model.engine
        qcore = self.calibration.state() if self.calibration is not None else None
        self.metrics.inc("collects")
        return collect_reply(
            self.cfg.metrics.board_name,
            eng.model_version,
            eng.input_shape,
            self.model.label_names,
            bool(self.model.bundle.meta.get(SERIES_NORM)),
            list(self.labelled),
            qcore,
        )
