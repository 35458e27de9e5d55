"""The agent's part in a fleet: Prometheus exposition, and the status commands
``collect`` (field data for ``edge-agent collect``), ``reload``, ``push`` and
``rollback`` (``edge-agent rollout``), carried out by the main loop.

A pushed bundle is written into the state directory (:mod:`edge_agent.service.deploy`),
loaded and warmed up before it replaces anything: one the agent cannot run is refused
(counted as ``push_failures``) and the running model stays.

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle import SERIES_NORM
from edge_agent.bundle_io import load_bundle
from edge_agent.ingest.control import Request
from edge_agent.service.deploy import Deployments
from edge_agent.service.field_export import collect_reply
from edge_agent.service.model import Model

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
        _requests: queue.SimpleQueue[tuple[Request, Future[dict[str, Any]]]]
        _base_path: Path

        def status(self) -> dict[str, Any]: ...
        def _reload_config(self) -> str | None: ...
        def _close_io(self, with_status: bool = True) -> None: ...
        def _swap_model(self, path: Path) -> None: ...
        def _use_model(self, model: Model, data: bytes, path: Path) -> None: ...

    def _init_fleet(self) -> None:
        # collect / reload / push / rollback from the status thread, done by the main loop
        self._requests = queue.SimpleQueue()
        self.exporter = None  # MetricsExporter when [metrics] is on
        self.deploy = Deployments(self.cfg.state_dir)

    def _bundle_path(self, cfg: AgentConfig) -> Path:
        """The bundle the agent runs from: a pushed one, else the configured one."""
        return self.deploy.bundle_path(Path(cfg.model.bundle))

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

    def _defer(self, req: Request) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        self._requests.put((req, fut))
        return fut

    def _serve_requests(self) -> None:
        """``collect``, ``reload``, ``push`` and ``rollback`` from the status socket (main
        thread: it owns the labelled log and the model)."""
        while not self._requests.empty():
            req, fut = self._requests.get()
            try:
                if req.cmd == "collect":
                    fut.set_result(self._collect())
                elif req.cmd == "push":
                    assert req.bundle is not None  # decode_request guarantees it
                    fut.set_result(self._push_now(req.bundle))
                elif req.cmd == "rollback":
                    fut.set_result(self._rollback_now())
                else:
                    fut.set_result(self._reload_now())
            except Exception as exc:  # the requester gets the error; the agent goes on
                log.exception("%s failed", req.cmd)
                fut.set_exception(exc)

    def _base_version(self) -> str:
        """The version of the bundle file the running model came from (calibration may
        have moved the engine's own)."""
        try:
            return load_bundle(str(self._base_path)).model_version
        except Exception:  # only informative: a rollback checks the version itself
            return ""

    def _push_refused(self, error: str, previous: str) -> dict[str, Any]:
        self.deploy.discard_incoming()
        self.metrics.inc("push_failures")
        return {
            "error": error,
            "model_version": self.model.engine.model_version,
            "previous_version": previous,
            "changed": False,
        }

    def _push_now(self, data: bytes) -> dict[str, Any]:
        """Write, load and check a pushed bundle, then run it (the old one kept)."""
        previous = self._base_version()
        try:
            incoming = self.deploy.incoming(data)
            model = Model.load(str(incoming))
        except Exception as exc:  # any bundle the engine cannot run is refused, not fatal
            log.error("pushed bundle refused, the running model stays: %s", exc)
            return self._push_refused(f"refused: {exc}", previous)
        try:
            current = self.deploy.install(self._base_path, Path(self.cfg.model.bundle))
        except OSError as exc:
            log.error("cannot keep the pushed bundle, the running model stays: %s", exc)
            return self._push_refused(f"cannot store it: {exc.strerror or exc}", previous)
        self._use_model(replace(model, path=str(current)), data, current)
        self.metrics.inc("pushes")
        log.info("pushed bundle %s runs (was %s)", model.engine.model_version, previous)
        return {
            "error": None,
            "model_version": model.engine.model_version,
            "previous_version": previous,
            "changed": True,
        }

    def _rollback_now(self) -> dict[str, Any]:
        """Back to the bundle the last push replaced: loaded first, then the files change."""
        configured = Path(self.cfg.model.bundle)
        try:
            source = self.deploy.rollback_source(configured)
            data = source.read_bytes()
            model = Model.load(str(source))
            path = self.deploy.rollback(configured)
        except Exception as exc:  # nothing to go back to, or it no longer loads: keep running
            self.metrics.inc("rollback_failures")
            log.error("rollback refused, the running model stays: %s", exc)
            return {"error": str(exc), "model_version": self.model.engine.model_version}
        self._use_model(replace(model, path=str(path)), data, path)
        self.metrics.inc("rollbacks")
        version = self.model.engine.model_version
        log.info("rolled back to %s (%s)", version, path)
        return {"error": None, "model_version": version}

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
