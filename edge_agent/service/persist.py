"""Checkpoints of the agent's state and configuration reloads (SIGHUP).

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle import BundleError
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.ingest.intake import Intake
from edge_agent.service.config import AgentConfig, ConfigError, load_config
from edge_agent.service.metrics import Metrics
from edge_agent.service.model import Model
from edge_agent.service.notify import Notifier
from edge_agent.service.state import LabelledSample, PendingCheckpoint, StateStore

log = logging.getLogger("edge_agent.agent")

# how long a checkpoint waits for a QCore buffer update in flight before it takes the
# buffer as last seen (the periodic one runs on the inference loop; the last one at stop)
STATE_WAIT_S = 0.02
STOP_STATE_WAIT_S = 2.0


class Persistence:
    """Checkpoints of the agent's state and configuration reloads (SIGHUP)."""

    if TYPE_CHECKING:  # what the other parts of Agent provide
        _base_sha: str
        _disk_errors: dict[str, str]
        _unsaved_model: bytes | None
        _ckpt_requests: queue.SimpleQueue[Future[dict[str, Any]]]
        _ckpt_writer: ThreadPoolExecutor
        # the write under way: its future, what was written, status info, waiting requests
        _ckpt_writing: (
            tuple[Future[Path], PendingCheckpoint, dict[str, Any], list[Future[dict[str, Any]]]]
            | None
        )
        _last_ckpt: dict[str, Any]
        calibration: CalibrationController | None
        cfg: AgentConfig
        config_path: Path | None
        intake: Intake
        labelled: deque[LabelledSample]
        metrics: Metrics
        model: Model
        notifier: Notifier
        store: StateStore

        _base_path: Path  # the bundle file the running model came from
        _base_mtime: float

        def _reopen_io(self, new: AgentConfig, old: AgentConfig) -> None: ...

        def _bundle_path(self, cfg: AgentConfig) -> Path: ...

        def _reload_status_keys(self) -> None: ...

        def _start_calibration(self, state: dict[str, Any] | None) -> None: ...

        def _status_line(self) -> str: ...

    def _restored_checkpoint(self, payload: dict[str, Any]) -> dict[str, Any]:
        """What status shows of the checkpoint restored at start, until the next one."""
        gen = payload["generation"]
        info = {
            "path": str(self.store.dir / f"checkpoint-{gen:012d}.eas"),
            "generation": gen,
            "labelled": payload.get("labelled"),
            "time": payload.get("written"),
            "restored": True,
        }
        written = payload.get("written")
        if isinstance(written, int | float):  # its age: the wall clock's now, then monotonic
            info["monotonic"] = time.monotonic() - max(0.0, time.time() - written)
        return info

    def _disk_failed(self, what: str, exc: OSError, every: bool = False) -> None:
        """Log a failed write to the state directory: every time with ``every``, else
        once until it works again (the caller counts each failure)."""
        first = what not in self._disk_errors
        self._disk_errors[what] = exc.strerror or str(exc)
        if every or first:
            log.error("%s failed: %s", what, exc)

    def _disk_ok(self, what: str) -> None:
        """A write to the state directory worked: say so once after failures."""
        if self._disk_errors.pop(what, None) is not None:
            log.info("%s works again", what)

    def _log_labelled(self, fresh: list[LabelledSample]) -> None:
        """Append accepted labelled samples to the log; on a failing disk they stay in
        memory only and are counted as ``labelled_unlogged``."""
        try:
            self.store.append_labelled(fresh)
        except OSError as exc:
            self.metrics.inc("labelled_log_errors")
            self.metrics.inc("labelled_unlogged", len(fresh))
            self._disk_failed("labelled log", exc)
            return
        self._disk_ok("labelled log")

    def _save_model(self, data: bytes) -> bool:
        """Replace the state directory's model; False (counted, logged) if the disk
        refuses: the running model stays in memory, the previous file stays intact, and
        every checkpoint tries again until it is saved."""
        self._unsaved_model = data
        try:
            self.store.save_model(data)
        except OSError as exc:
            self.metrics.inc("model_save_errors")
            self._disk_failed("saving the model", exc, every=True)
            return False
        self._unsaved_model = None
        self._disk_ok("saving the model")
        return True

    def _request_checkpoint(self) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        self._ckpt_requests.put(fut)
        return fut

    def _checkpoint(self, wait: bool = False) -> bool:
        """Snapshot the state on this (the main) thread and write it on the checkpoint
        thread: its fsyncs take milliseconds (2-16 ms on the development machine), which
        the inference loop would otherwise stall for. One write at a time: while one is
        under way, False (the loop tries again). ``wait``: finish the write under way
        and this one before returning (shutdown)."""
        if self._ckpt_writing is not None:
            if not wait:
                return False
            self._finish_checkpoint(block=True)
        waiting = []
        while not self._ckpt_requests.empty():
            waiting.append(self._ckpt_requests.get())
        if self._unsaved_model is not None:  # a model save the disk refused earlier
            self._save_model(self._unsaved_model)
        pending = self.store.prepare_checkpoint(
            {
                "model_version": self.model.engine.model_version,
                "base_sha256": self._base_sha,
                "counts": self.metrics.counts(),
                "sequences": self.intake.sequences(),
                "labelled": len(self.labelled),
                "calibration": (
                    self.calibration.state(wait=STOP_STATE_WAIT_S if wait else STATE_WAIT_S)
                    if self.calibration
                    else None
                ),
            }
        )
        info = {"generation": self.store.generation, "labelled": len(self.labelled)}
        future = self._ckpt_writer.submit(self.store.write_checkpoint, pending)
        self._ckpt_writing = (future, pending, info, waiting)
        if wait:
            self._finish_checkpoint(block=True)
        return True

    def _finish_checkpoint(self, block: bool = False) -> None:
        """Count and report the checkpoint write under way once it is done (main thread;
        ``block``: wait for it)."""
        if self._ckpt_writing is None:
            return
        future, pending, info, waiting = self._ckpt_writing
        if not (block or future.done()):
            return
        self._ckpt_writing = None
        try:
            path = future.result()
        except OSError as exc:
            self.metrics.inc("checkpoint_errors")
            self._disk_failed("checkpoint", exc, every=True)
            for fut in waiting:
                fut.set_exception(exc)
            return
        finally:
            if pending.log_error is not None:
                self.store.abandon_log()
        info = {
            "path": str(path),
            **info,
            "ms": pending.ms,
            "time": time.time(),  # wall clock: a timestamp, never a duration
            "monotonic": time.monotonic(),
        }
        self._last_ckpt = info
        self.metrics.inc("checkpoints")
        log.debug("checkpoint %s written in %.1f ms", path.name, pending.ms)
        for fut in waiting:
            fut.set_result(info)
        self._disk_ok("checkpoint")

    def _reload_config(self) -> str | None:
        """Reload the configuration file (and a changed bundle); return why it failed."""
        if self.config_path is None:
            log.warning("SIGHUP: no configuration file to reload")
            return "no configuration file to reload"
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self.metrics.inc("model_reload_failures")
            self.notifier.ready(self._status_line())
            return str(exc)
        old = self.cfg
        logging.getLogger().setLevel(new.log.level.upper())
        self.metrics.set_accuracy_window(new.inference.accuracy_window)
        if new.state != old.state:
            log.warning("[state] changes take effect at the next restart")
            new = replace(new, state=old.state)
        if new.metrics != old.metrics:  # the exporter keeps its socket and board label
            log.warning("[metrics] changes take effect at the next restart")
            new = replace(new, metrics=old.metrics)
        try:
            path = self._bundle_path(new)  # a pushed bundle, or the configured one
            if path != self._base_path or os.stat(path).st_mtime != self._base_mtime:
                self._swap_model(path)
            if (new.ingest, new.serial, new.output, new.status) != (
                old.ingest,
                old.serial,
                old.output,
                old.status,
            ):
                self._reopen_io(new, old)
        except (BundleError, OSError, RuntimeError, ConfigError) as exc:
            log.error("reload failed, keeping the running model and sockets: %s", exc)
            self.metrics.inc("model_reload_failures")
            self.notifier.ready(self._status_line())
            return str(exc)
        self.cfg = new
        self._reload_status_keys()  # a client added to (or removed from) the allow-list
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready(self._status_line())
        return None

    def _swap_model(self, path: Path) -> None:
        """Run the bundle at ``path`` (raises BundleError or OSError, nothing changed)."""
        data = path.read_bytes()
        self._use_model(Model.load(str(path)), data, path)

    def _use_model(self, model: Model, data: bytes, path: Path) -> None:
        """Run ``model``, loaded from ``data`` at ``path``, from the next batch on."""
        eng = model.engine
        if self._save_model(data):
            self.store.forget_models()  # calibrated from the old bundle: no fallback for this one
        self._base_sha = hashlib.sha256(data).hexdigest()
        self._base_path, self._base_mtime = path, os.stat(path).st_mtime
        self.intake.input_shape, self.intake.num_classes = tuple(eng.input_shape), eng.num_classes
        self.model = model  # one reference assignment: the next batch uses the new engine
        self._start_calibration(None)  # a new model starts from its own QCore
        self.metrics.inc("model_reloads")
        log.info("model %s loaded from %s", eng.model_version, model.path)
