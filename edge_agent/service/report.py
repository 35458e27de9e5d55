"""What the status socket answers and the periodic status line.

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.calibrate.burst_scheduler import BurstScheduler
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.contracts import SampleSource
from edge_agent.energy import EnergyDecision
from edge_agent.ingest.intake import Item
from edge_agent.ingest.queue import DropQueue
from edge_agent.ingest.serial_source import SerialSource
from edge_agent.service.config import AgentConfig
from edge_agent.service.deploy import Deployments
from edge_agent.service.metrics import Metrics
from edge_agent.service.model import Model
from edge_agent.service.state import LabelledSample
from edge_agent.service.status import StatusServer
from edge_agent.service.status_curve import REFUSED_REASONS as REFUSED

RUNG_COUNTERS = (  # per rung (edge_agent.calibrate.controller counts them)
    "stats_rounds_kept",
    "stats_rounds_rolled_back",
    "flip_rounds_kept",
    "flip_rounds_rolled_back",
    "label_rounds_kept",  # edge_agent.calibrate.label_rung
    "label_rounds_rolled_back",
    "drift_alarms",
    "drift_alarms_input",  # which score fired (edge_agent.calibrate.drift_signal)
    "drift_alarms_output",
    "rounds_skipped",
    "domain_returns",  # a drift window back in a held domain (edge_agent.calibrate.routing)
)

log = logging.getLogger("edge_agent.agent")


class StatusReport:
    """What the status socket answers and the periodic status line."""

    if TYPE_CHECKING:  # what the other parts of Agent provide
        _cal_thread: threading.Thread | None
        _disk_errors: dict[str, str]
        _energy: EnergyDecision | None
        _last_ckpt: dict[str, Any]
        rounds: deque[dict[str, Any]]
        model_fallback: dict[str, Any] | None
        calibration_busy: bool
        _stopping: bool
        realtime_threads: list[int]
        bursts: BurstScheduler | None
        calibration: CalibrationController | None
        cfg: AgentConfig
        config_path: Path | None
        labelled: deque[LabelledSample]
        metrics: Metrics
        model: Model
        queue: DropQueue[Item]
        sources: list[SampleSource]
        status_server: StatusServer | None
        remote_status: StatusServer | None
        deploy: Deployments

        def endpoints(self) -> dict[str, list[str]]: ...

        def _fleet_dead(self) -> list[str]: ...

    def threads(self) -> dict[str, bool]:
        """Whether each of the agent's long-lived threads runs."""
        out = {type(s).__name__: s.alive() for s in self.sources}
        if self.status_server is not None:
            out["StatusServer"] = self.status_server.alive()
        if self.remote_status is not None:
            out["RemoteStatusServer"] = self.remote_status.alive()
        if self._cal_thread is not None:
            out["calibration"] = self._cal_thread.is_alive()
        out.update(dict.fromkeys(self._fleet_dead(), False))
        return out

    def _serial(self, c: dict[str, int]) -> dict[str, Any] | None:
        """The serial port's state and its disconnect/reconnect counts (None: no serial)."""
        ports = [s for s in self.sources if isinstance(s, SerialSource)]
        if not ports:
            return None
        return {
            "port": ports[0].cfg.port,
            "connected": ports[0].connected.is_set(),
            "disconnects": c.get("serial_disconnects", 0),
            "reconnects": c.get("serial_reconnects", 0),
            "open_failures": c.get("serial_open_failures", 0),
        }

    def _ping(self) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "version": __version__}

    def _metrics(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["queue"] = {"depth": len(self.queue), "capacity": self.queue.capacity}
        return snap

    def _config(self) -> dict[str, Any]:
        return {
            "path": str(self.config_path) if self.config_path else None,
            "config": self.cfg.to_dict(),
        }

    def _count_control_error(self, reason: str) -> None:
        self.metrics.inc(f"control_errors_{reason}")

    def _count(self, name: str) -> None:
        self.metrics.inc(name)

    def status(self) -> dict[str, Any]:
        """Everything ``edge-agent status`` shows."""
        snap = self.metrics.snapshot()
        c = snap["counters"]
        eng = self.model.engine
        return {
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": snap["uptime_s"],
                "stopping": self._stopping,
            },
            "board": self.cfg.metrics.board_name,
            "model": {
                "version": eng.model_version,
                "bits": eng.bits,
                "path": self.model.path,
                "input_shape": list(eng.input_shape),
                "num_classes": eng.num_classes,
                "label_names": self.model.label_names,
                "fallback": self.model_fallback,
                "deploy": self.deploy.status(Path(self.cfg.model.bundle)),
            },
            "samples": {
                "received": c.get("received", 0),
                "accepted": c.get("accepted", 0) + c.get("accepted_labelled", 0),
                "accepted_labelled": c.get("accepted_labelled", 0),
                "feedback": c.get("accepted_feedback", 0),
                "feedback_unmatched": c.get("feedback_unmatched", 0),
                "rejected": snap["rejected"],
                "rejected_total": sum(snap["rejected"].values()),
                "dropped": snap["dropped"],
                "predicted": c.get("predicted", 0),
                "seq_gaps": c.get("seq_gaps", 0),
                "seq_missing": c.get("seq_missing", 0),
                "seq_restarts": c.get("seq_restarts", 0),
            },
            "losses": _losses(snap),
            "accuracy": {
                "rolling": snap["rolling_accuracy"],
                "n": snap["rolling_accuracy_n"],
                "labelled_total": c.get("labelled_predictions", 0),
                "labelled_correct": c.get("labelled_correct", 0),
            },
            "prediction_rate_per_s": snap["prediction_rate_per_s"],
            "latency_ms": snap["latency_ms"],
            "queue": {"depth": len(self.queue), "capacity": self.queue.capacity},
            "buffer": {"labelled": len(self.labelled), "capacity": self.labelled.maxlen},
            "calibration": {
                "done": c.get("calibrations", 0),
                "accepted": c.get("calibrations_accepted", 0),
                "rolled_back": c.get("calibrations_rolled_back", 0),
                "errors": c.get("calibration_errors", 0),
                "busy": self.calibration_busy,  # a job in flight
                "rounds": list(self.rounds),  # the latest: kept, and the sample it ended at
                **{k: c.get(k, 0) for k in RUNG_COUNTERS},
                **(self.calibration.stats() if self.calibration else {"enabled": False}),
            },
            "energy": self._energy.as_status() if self._energy else None,
            "bursts": self.bursts.status() if self.bursts else {"enabled": False},
            "endpoints": self.endpoints(),
            "checkpoint": _with_age(self._last_ckpt),
            "storage": {
                "checkpoints": c.get("checkpoints", 0),
                "checkpoint_errors": c.get("checkpoint_errors", 0),
                "model_save_errors": c.get("model_save_errors", 0),
                "labelled_log_errors": c.get("labelled_log_errors", 0),
                "labelled_unlogged": c.get("labelled_unlogged", 0),
                "failing": dict(self._disk_errors),
            },
            "threads": self.threads(),
            "scheduling": {  # [inference] realtime_priority: asked, threads granted, refusals
                "realtime_priority": self.cfg.inference.realtime_priority,
                "realtime_threads": len(self.realtime_threads),
                "realtime_refused": c.get("realtime_refused", 0),
            },
            "serial": self._serial(c),
            "fleet": {
                "reloads": c.get("model_reloads", 0),
                "reload_failures": c.get("model_reload_failures", 0),
                "collects": c.get("collects", 0),
                "pushes": c.get("pushes", 0),
                "push_failures": c.get("push_failures", 0),
                "rollbacks": c.get("rollbacks", 0),
                "rollback_failures": c.get("rollback_failures", 0),
            },
            "control": {
                # requests answered with an error, by reason (oversized: a push too large)
                "errors": {
                    k[len("control_errors_") :]: v
                    for k, v in c.items()
                    if k.startswith("control_errors_")
                },
                # the remote status socket's refused clients, by reason
                "refused": {r: c.get(f"status_refused_{r}", 0) for r in REFUSED},
            },
            "rss_bytes": snap["rss_bytes"],
        }

    def _status_line(self) -> str:
        snap = self.metrics.snapshot()
        acc = snap["rolling_accuracy"]
        return (
            f"{snap['counters'].get('predicted', 0)} predicted, "
            f"{snap['prediction_rate_per_s']:.0f}/s, "
            f"accuracy {'n/a' if acc is None else f'{acc:.3f}'}, "
            f"queue {len(self.queue)}/{self.queue.capacity}, "
            f"model {self.model.engine.model_version}"
        )


def _losses(snap: dict[str, Any]) -> dict[str, int]:
    """What never became a prediction, by the stage that lost it (docs/protocol.md,
    "Overload, and where samples are lost")."""
    c = snap["counters"]
    return {
        "missing_in_transport": c.get("seq_missing", 0),  # seq gaps: ZeroMQ, network
        "transport_disconnects": c.get("ingest_disconnects", 0),
        "rejected": sum(snap["rejected"].values()),
        "dropped_from_queue": sum(snap["dropped"].values()),
    }


def _with_age(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's info with ``age_s`` from the monotonic clock (right across wall-clock
    jumps, e.g. NTP stepping a board without a real-time clock out of 1970)."""
    if "monotonic" not in ckpt:
        return ckpt
    out = {k: v for k, v in ckpt.items() if k != "monotonic"}
    out["age_s"] = time.monotonic() - ckpt["monotonic"]
    return out
