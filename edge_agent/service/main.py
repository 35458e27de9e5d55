"""The agent's main loop: load the model, restore state, run ingest -> inference -> outputs.

Threads: one per ingest source, one for the status socket; the main thread runs the
inference loop, checkpoints, reloads and watchdog pings, so everything that touches the
engine, the labelled buffer or the state store happens in one place.

Signals: SIGTERM/SIGINT stop ingest, finish queued work, checkpoint and exit 0;
SIGHUP reloads the configuration file.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_agent import __version__
from edge_agent.bundle import Bundle, BundleError, load_bundle, to_bytes
from edge_agent.calibrate.burst_scheduler import BurstScheduler
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.data.datasets import SERIES_NORM, normalize_series
from edge_agent.energy import EnergyDecision, EnergyMonitor
from edge_agent.engine import Engine
from edge_agent.service.config import AgentConfig, ConfigError, add_run_arguments, load_config
from edge_agent.service.intake import Intake, Item
from edge_agent.service.metrics import Metrics
from edge_agent.service.notify import Notifier
from edge_agent.service.protocol import Feedback, Sample, encode_prediction
from edge_agent.service.queue import DropQueue
from edge_agent.service.serial_source import SerialSource
from edge_agent.service.state import LabelledSample, StateStore
from edge_agent.service.status import StatusServer
from edge_agent.service.zmq_source import ZmqSource

log = logging.getLogger("edge_agent.agent")

EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus keeps it from looping
DRAIN_DEADLINE_S = 5.0
STATUS_EVERY_S = 5.0
IDLE_WAIT_S = 0.1
CALIBRATION_POLL_S = 0.2
CALIBRATION_JOIN_S = 2.0
BURST_RECENT = 256  # recent unlabelled stream samples offered to a QAT burst


@dataclass
class Model:
    """The running model: its engine and what the agent reports about it."""

    engine: Engine
    path: str
    mtime: float
    label_names: list[str]
    bundle: Bundle

    @classmethod
    def load(cls, path: str) -> Model:
        """Load a bundle, build the engine and run it once so the JIT is warm."""
        bundle = load_bundle(path)
        engine = Engine(bundle)
        engine.warmup()
        if bundle.meta.get(SERIES_NORM):
            log.info("the model takes samples z-normalized per series: the agent does it")
        return cls(engine, path, os.stat(path).st_mtime, list(bundle.label_names), bundle)

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """Accepted samples as the model takes them (z-normalized per series if it was
        trained so); everything after ingest sees only these."""
        return normalize_series(X) if self.bundle.meta.get(SERIES_NORM) else X


class Agent:
    """One agent process: owns the sockets, threads, engine and state."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.notifier = Notifier()
        self.metrics = Metrics(cfg.inference.accuracy_window)
        self.queue: DropQueue[Item] = DropQueue(cfg.ingest.queue_capacity)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.store = StateStore(cfg.state_dir, cfg.state.keep, cfg.state.labelled_capacity)
        # Accepted labelled samples, newest last: the QCore buffer's source (persisted by
        # the state store's log).
        self.labelled: deque[LabelledSample] = deque(maxlen=cfg.state.labelled_capacity)
        self._recent: OrderedDict[tuple[str, int], tuple[np.ndarray, int]] = OrderedDict()
        self._ckpt_requests: queue.SimpleQueue[Future[dict[str, Any]]] = queue.SimpleQueue()
        self._stopping = False
        self._reload = False
        self._last_ckpt: dict[str, Any] = {}
        self._base_sha = ""
        self.model: Model
        self.intake: Intake
        self.sources: list[ZmqSource | SerialSource] = []
        self.status_server: StatusServer | None = None
        self.pub: zmq.Socket[bytes] | None = None
        self.calibration: CalibrationController | None = None
        self._cal_results: queue.SimpleQueue[
            tuple[CalibrationController, RoundResult | Exception]] = queue.SimpleQueue()
        self._cal_thread: threading.Thread | None = None
        self.energy = EnergyMonitor(cfg.energy)
        self._energy: EnergyDecision | None = None
        self._bursts_seen = 0
        self.bursts = (BurstScheduler(self.cfg.state_dir / "burst", cfg.bursts.scheduler)
                       if cfg.bursts.enabled else None)

    # ------------------------------------------------------------ start-up

    def start(self) -> None:
        """Restore state, load the model, open sockets, start threads, tell systemd."""
        t0 = time.monotonic()
        self.notifier.status("loading model")
        payload, samples = self.store.restore()
        self.model = self._load_model(payload)
        eng = self.model.engine
        log.info("model %s loaded from %s: input %s, %d classes (JIT warm after %.1f s)",
                 eng.model_version, self.model.path, list(eng.input_shape), eng.num_classes,
                 time.monotonic() - t0)
        self.intake = Intake(self.queue, self.metrics, tuple(eng.input_shape),
                             eng.num_classes, self.cfg.ingest.max_message_bytes)
        self.labelled.extend(samples)
        self._start_calibration(payload.get("calibration") if payload else None)
        if payload is not None:
            counts = payload.get("counts", {})
            self.metrics.restore(counts.get("counters", {}), counts.get("rejected", {}),
                                 counts.get("dropped", {}))
            self.intake.restore_sequences(payload.get("sequences", {}))
        self._open_io(self.cfg)
        self._cal_thread = threading.Thread(target=self._calibration_loop, name="calibration",
                                            daemon=True)
        self._cal_thread.start()
        self.notifier.ready(self._status_line())
        log.info("ready in %.1f s: ingest %s, predictions %s, status %s",
                 time.monotonic() - t0, self._ingest_endpoints(),
                 ", ".join(self.cfg.output.endpoints), ", ".join(self._status_endpoints(self.cfg)))

    def _load_model(self, payload: dict[str, Any] | None) -> Model:
        """The state directory's model if it derives from the configured bundle (it holds
        in-place updates), else the configured bundle, copied into the state directory."""
        base = Path(self.cfg.model.bundle)
        try:
            self._base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
        except OSError as exc:
            raise BundleError(f"{base}: cannot read bundle: {exc.strerror or exc}") from None
        current = self.store.model_path
        if payload is not None and payload.get("base_sha256") == self._base_sha and \
                current.exists():
            try:
                return Model.load(str(current))
            except BundleError as exc:
                self.store.set_aside(current, str(exc))
        elif payload is not None:
            log.info("the configured bundle changed since the last checkpoint: starting from it")
        model = Model.load(str(base))
        self.store.save_model(base.read_bytes())
        return model

    def _start_calibration(self, state: dict[str, Any] | None) -> None:
        """The QCore buffer and bit-flip calibrator of the running model (if enabled)."""
        self.calibration = None
        if self.cfg.calibration.enabled:
            self.calibration = CalibrationController(self.model.bundle, self.cfg.calibration,
                                                     state, count=self.metrics.inc)

    def _status_endpoints(self, cfg: AgentConfig) -> list[str]:
        return ([cfg.status_ipc] if cfg.status.ipc else []) + ([cfg.status.tcp] if cfg.status.tcp
                                                              else [])

    def endpoints(self) -> dict[str, list[str]]:
        """Where the agent listens, with wildcard tcp ports resolved."""
        out: list[str] = []
        if self.pub is not None:
            out = [*self.cfg.output.endpoints[:-1],
                   self.pub.getsockopt_string(zmq.LAST_ENDPOINT)]
        ingest = [ep for s in self.sources if isinstance(s, ZmqSource) for ep in s.endpoints]
        return {"ingest": ingest, "output": out, "status": self._status_endpoints(self.cfg)}

    def _ingest_endpoints(self) -> str:
        eps = [ep for s in self.sources if isinstance(s, ZmqSource) for ep in s.endpoints]
        eps += [f"serial {s.cfg.port}" for s in self.sources if isinstance(s, SerialSource)]
        return ", ".join(eps) or "none"

    def _open_io(self, cfg: AgentConfig, with_status: bool = True) -> None:
        """Open ingest, output and (``with_status``) status sockets for ``cfg`` and start
        their threads."""
        try:
            pub = self.ctx.socket(zmq.PUB)
            self.pub = pub
            pub.setsockopt(zmq.SNDHWM, cfg.output.sndhwm)
            pub.setsockopt(zmq.LINGER, 0)
            for ep in cfg.output.endpoints:
                try:
                    pub.bind(ep)
                except zmq.ZMQError as exc:
                    raise RuntimeError(f"output socket {ep}: {exc}") from None
            if cfg.ingest.endpoints:
                self.sources.append(ZmqSource(self.ctx, cfg.ingest, self.intake))
            if cfg.serial.enabled:
                self.sources.append(SerialSource(cfg.serial, self.intake))
            if with_status:
                self.status_server = StatusServer(
                    self.ctx, self._status_endpoints(cfg),
                    {"ping": self._ping, "status": self.status, "metrics": self._metrics,
                     "config": self._config},
                    self._request_checkpoint, self._count_control_error)
        except BaseException:
            self._close_io(with_status)
            raise
        for src in self.sources:
            src.start()
        if with_status and self.status_server is not None:
            self.status_server.start()

    def _close_io(self, with_status: bool = True) -> None:
        for src in self.sources:
            src.stop()
        self.sources = []
        if with_status and self.status_server is not None:
            self.status_server.stop()
            self.status_server = None
        if self.pub is not None:
            self.pub.close(linger=0)
            self.pub = None

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`)."""
        cfg_interval = self.cfg.state.checkpoint_interval_s
        next_ckpt = time.monotonic() + cfg_interval
        next_status = time.monotonic() + STATUS_EVERY_S
        next_watchdog = time.monotonic()
        next_energy = time.monotonic()
        while not self._stopping:
            batch = self.queue.get_batch(self.cfg.inference.batch_max, IDLE_WAIT_S)
            if batch:
                self._process(batch)
            self._collect_calibrations()
            now = time.monotonic()
            if now >= next_energy:
                self._energy_tick()
                next_energy = now + self.cfg.bursts.energy_poll_s
            if now >= next_ckpt or not self._ckpt_requests.empty():
                self._checkpoint()
                next_ckpt = now + self.cfg.state.checkpoint_interval_s
            if self._reload:
                self._reload = False
                self._reload_config()
            if now >= next_status:
                self.notifier.status(self._status_line())
                next_status = now + STATUS_EVERY_S
            if self.notifier.watchdog_interval_s is not None and now >= next_watchdog:
                if self._threads_alive():
                    self.notifier.watchdog()
                next_watchdog = now + self.notifier.watchdog_interval_s

    def _calibration_loop(self) -> None:
        """The calibration thread: QCore updates and flip rounds whenever a chunk is
        ready. Inference never waits for it (the engine swap is one reference
        assignment); its results go back to the main thread, which owns the state store."""
        while not self._stopping:
            ctl = self.calibration
            busy = self.bursts is not None and self.bursts.state != "idle"
            if ctl is None or busy or not ctl.due():
                time.sleep(CALIBRATION_POLL_S)
                continue
            try:
                result: RoundResult | Exception | None = ctl.run(self.model.engine)
            except Exception as exc:  # a calibration bug must never stop the agent
                log.exception("calibration round failed; the model is unchanged")
                result = exc
            if result is not None:  # None: a buffer update without a round
                self._cal_results.put((ctl, result))

    def _collect_calibrations(self) -> None:
        """Count finished rounds; save an accepted model at once (main thread)."""
        while not self._cal_results.empty():
            ctl, result = self._cal_results.get()
            if isinstance(result, Exception):
                self.metrics.inc("calibration_errors")
                continue
            self.metrics.inc("calibrations")
            if result.version is None:
                self.metrics.inc("calibrations_rolled_back")
                continue
            self.metrics.inc("calibrations_accepted")
            if ctl is not self.calibration:  # the model was replaced meanwhile
                continue
            try:
                self.store.save_model(to_bytes(ctl.updated_bundle(self.model.engine)))
            except OSError as exc:
                self.metrics.inc("checkpoint_errors")
                log.error("could not save the recalibrated model: %s", exc)

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
        cal = self.calibration
        current = cal.updated_bundle(eng) if cal else self.model.bundle
        accepted = self.bursts.tick(d, current, lambda x: eng.predict(x)[0], self._burst_pool,
                                    wanted=cal.burst_wanted() if cal else True)
        if cal is not None and self.bursts.counters.started != self._bursts_seen:
            cal.burst_started()  # bursts, like rounds, follow the drift signal
        self._bursts_seen = self.bursts.counters.started
        if accepted is None or accepted.engine is None or accepted.bundle is None:
            return
        data = to_bytes(accepted.bundle)
        self.store.save_model(data)
        state = self.calibration.state() if self.calibration else None
        self.model = replace(self.model, engine=accepted.engine, bundle=accepted.bundle)
        self._start_calibration(state)  # the buffer carries over to the new weights
        if cal is not None and self.calibration is not None:
            self.calibration.carry_from(cal)  # and the drift signal: the drift is known
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
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def _threads_alive(self) -> bool:
        dead = [type(s).__name__ for s in self.sources if not s.alive()]
        if self.status_server is not None and not self.status_server.alive():
            dead.append("StatusServer")
        if self._cal_thread is not None and not self._cal_thread.is_alive():
            dead.append("calibration")
        if dead:
            log.error("thread(s) died: %s; withholding the watchdog ping", ", ".join(dead))
        return not dead

    def _process(self, batch: list[Item]) -> None:
        """Predict a batch, log its labelled samples, then publish the predictions (so a
        published prediction implies its labelled sample is already in the log)."""
        samples = [it for it in batch if isinstance(it.msg, Sample)]
        preds: dict[int, tuple[int, np.ndarray]] = {}
        if samples:
            t0 = time.perf_counter()
            X = self.model.prepare(np.stack([it.msg.x for it in samples]))  # type: ignore[union-attr]
            classes, conf = self.model.engine.predict(X)
            done = time.perf_counter()
            preds = {id(it): (int(c), x) for it, c, x in zip(samples, classes, X, strict=True)}
        fresh: list[LabelledSample] = []
        window = self.cfg.inference.feedback_window
        cal = self.calibration
        # drift scores of the whole batch in one call; samples and late labels still reach
        # the calibration in message order (its jobs must not depend on the batching)
        scores = cal.drift_scores(X) if cal is not None and samples else None
        rows = {id(it): i for i, it in enumerate(samples)}
        for it in batch:
            msg = it.msg
            if isinstance(msg, Sample):
                pred, x = preds[id(it)]
                if cal is not None:
                    cal.observe(x, msg.label, msg.seq,
                                None if scores is None else float(scores[rows[id(it)]]))
                if msg.label is not None:
                    fresh.append(self._labelled(msg.sensor, msg.seq, msg.ts, msg.label, pred, x))
                elif window:
                    self._recent[(msg.sensor, msg.seq)] = (x, pred)
                    if len(self._recent) > window:
                        self._recent.popitem(last=False)
            else:
                fresh.extend(self._feedback(msg))
        if fresh:
            self.store.append_labelled(fresh)
            self.labelled.extend(fresh)
        if samples:
            latencies = self._publish(samples, classes, conf, done)
            self.metrics.record_batch(len(samples), (done - t0) * 1e3, latencies)

    def _publish(self, samples: list[Item], classes: np.ndarray, conf: np.ndarray,
                 done: float) -> list[float]:
        names = self.model.label_names
        version = self.model.engine.model_version
        latencies = []
        assert self.pub is not None
        for it, c, p in zip(samples, classes, conf, strict=True):
            s = it.msg
            assert isinstance(s, Sample)
            lat = (done - it.arrived) * 1e3
            latencies.append(lat)
            payload = encode_prediction(s.sensor, s.seq, s.ts, int(c), names[int(c)], float(p),
                                        version, lat, s.label)
            self.pub.send_multipart([b"pred/" + s.sensor.encode(), payload])
        return latencies

    def _labelled(self, sensor: str, seq: int, ts: float, label: int, pred: int,
                  x: np.ndarray) -> LabelledSample:
        self.metrics.record_outcome(pred == label)
        return LabelledSample(sensor, seq, ts, label, pred, x)

    def _feedback(self, fb: Feedback) -> list[LabelledSample]:
        hit = self._recent.pop((fb.sensor, fb.seq), None)
        if hit is None:
            self.metrics.inc("feedback_unmatched")
            return []
        x, pred = hit
        if self.calibration is not None:
            self.calibration.feedback(fb.seq, fb.label)
        return [self._labelled(fb.sensor, fb.seq, time.time(), fb.label, pred, x)]

    # ------------------------------------------------------------ checkpoints

    def _request_checkpoint(self) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        self._ckpt_requests.put(fut)
        return fut

    def _checkpoint(self) -> None:
        waiting = []
        while not self._ckpt_requests.empty():
            waiting.append(self._ckpt_requests.get())
        try:
            t0 = time.perf_counter()
            path = self.store.checkpoint({
                "model_version": self.model.engine.model_version,
                "base_sha256": self._base_sha,
                "counts": self.metrics.counts(),
                "sequences": self.intake.sequences(),
                "labelled": len(self.labelled),
                "calibration": self.calibration.state() if self.calibration else None,
            })
            info = {"path": str(path), "generation": self.store.generation,
                    "labelled": len(self.labelled), "ms": (time.perf_counter() - t0) * 1e3,
                    "time": time.time()}
            self._last_ckpt = info
            self.metrics.inc("checkpoints")
            log.debug("checkpoint %s written in %.1f ms", path.name, info["ms"])
            for fut in waiting:
                fut.set_result(info)
        except OSError as exc:
            self.metrics.inc("checkpoint_errors")
            log.error("checkpoint failed: %s", exc)
            for fut in waiting:
                fut.set_exception(exc)

    # ------------------------------------------------------------ reload

    def _reload_config(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: no configuration file to reload")
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_line())
            return
        old = self.cfg
        logging.getLogger().setLevel(new.log.level.upper())
        self.metrics.set_accuracy_window(new.inference.accuracy_window)
        if new.state != old.state:
            log.warning("[state] changes take effect at the next restart")
            new = replace(new, state=old.state)
        try:
            if new.model.bundle != old.model.bundle or \
                    os.stat(new.model.bundle).st_mtime != self.model.mtime:
                self._swap_model(new)
            if (new.ingest, new.serial, new.output, new.status) != \
                    (old.ingest, old.serial, old.output, old.status):
                self._reopen_io(new, old)
        except (BundleError, OSError, RuntimeError) as exc:
            log.error("reload failed, keeping the running model and sockets: %s", exc)
            self.notifier.ready(self._status_line())
            return
        self.cfg = new
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready(self._status_line())

    def _swap_model(self, new: AgentConfig) -> None:
        data = Path(new.model.bundle).read_bytes()
        model = Model.load(new.model.bundle)
        eng = model.engine
        self.store.save_model(data)
        self._base_sha = hashlib.sha256(data).hexdigest()
        self.intake.input_shape, self.intake.num_classes = tuple(eng.input_shape), eng.num_classes
        self.model = model  # one reference assignment: the next batch uses the new engine
        self._start_calibration(None)  # a new model starts from its own QCore
        log.info("model %s loaded from %s", eng.model_version, model.path)

    def _reopen_io(self, new: AgentConfig, old: AgentConfig) -> None:
        # the status socket stays up through a reload unless its own endpoints change
        status = self._status_endpoints(new) != self._status_endpoints(old)
        self._close_io(status)
        try:
            self._open_io(new, status)
        except (RuntimeError, zmq.ZMQError, OSError):
            self._open_io(old, status)
            raise
        log.info("sockets reopened: ingest %s", self._ingest_endpoints())

    # ------------------------------------------------------------ status

    def _ping(self) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "version": __version__}

    def _metrics(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        snap["queue"] = {"depth": len(self.queue), "capacity": self.queue.capacity}
        return snap

    def _config(self) -> dict[str, Any]:
        return {"path": str(self.config_path) if self.config_path else None,
                "config": self.cfg.to_dict()}

    def _count_control_error(self, reason: str) -> None:
        self.metrics.inc(f"control_errors_{reason}")

    def status(self) -> dict[str, Any]:
        """Everything ``edge-agent status`` shows."""
        snap = self.metrics.snapshot()
        c = snap["counters"]
        eng = self.model.engine
        return {
            "agent": {"version": __version__, "pid": os.getpid(), "uptime_s": snap["uptime_s"],
                      "stopping": self._stopping},
            "model": {"version": eng.model_version, "path": self.model.path,
                      "input_shape": list(eng.input_shape), "num_classes": eng.num_classes,
                      "label_names": self.model.label_names},
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
            },
            "accuracy": {"rolling": snap["rolling_accuracy"], "n": snap["rolling_accuracy_n"],
                         "labelled_total": c.get("labelled_predictions", 0)},
            "prediction_rate_per_s": snap["prediction_rate_per_s"],
            "latency_ms": snap["latency_ms"],
            "queue": {"depth": len(self.queue), "capacity": self.queue.capacity},
            "buffer": {"labelled": len(self.labelled), "capacity": self.labelled.maxlen},
            "calibration": {"done": c.get("calibrations", 0),
                            "stats_rounds_kept": c.get("stats_rounds_kept", 0),
                            "stats_rounds_rolled_back": c.get("stats_rounds_rolled_back", 0),
                            "flip_rounds_kept": c.get("flip_rounds_kept", 0),
                            "flip_rounds_rolled_back": c.get("flip_rounds_rolled_back", 0),
                            "drift_alarms": c.get("drift_alarms", 0),
                            "accepted": c.get("calibrations_accepted", 0),
                            "rolled_back": c.get("calibrations_rolled_back", 0),
                            "errors": c.get("calibration_errors", 0),
                            **(self.calibration.stats() if self.calibration else
                               {"enabled": False})},
            "energy": self._energy.as_status() if self._energy else None,
            "bursts": self.bursts.status() if self.bursts else {"enabled": False},
            "endpoints": self.endpoints(),
            "checkpoint": self._last_ckpt,
            "rss_bytes": snap["rss_bytes"],
        }

    def _status_line(self) -> str:
        snap = self.metrics.snapshot()
        acc = snap["rolling_accuracy"]
        return (f"{snap['counters'].get('predicted', 0)} predicted, "
                f"{snap['prediction_rate_per_s']:.0f}/s, "
                f"accuracy {'n/a' if acc is None else f'{acc:.3f}'}, "
                f"queue {len(self.queue)}/{self.queue.capacity}, "
                f"model {self.model.engine.model_version}")

    # ------------------------------------------------------------ shutdown

    def request_stop(self, *_: object) -> None:
        """Ask the main loop to stop (signal-handler safe)."""
        self._stopping = True

    def request_reload(self, *_: object) -> None:
        """Ask the main loop to reload the configuration (signal-handler safe)."""
        self._reload = True

    def shutdown(self) -> None:
        """Stop ingest, finish queued work, checkpoint and close everything."""
        t0 = time.monotonic()
        self.notifier.stopping()
        for src in self.sources:
            src.stop()
        deadline = t0 + DRAIN_DEADLINE_S
        while time.monotonic() < deadline:
            batch = self.queue.get_batch(self.cfg.inference.batch_max, 0)
            if not batch:
                break
            self._process(batch)
        left = len(self.queue)
        if left:
            log.warning("shutdown: %d queued items not processed within %.0f s", left,
                        DRAIN_DEADLINE_S)
        if self._cal_thread is not None:
            self._cal_thread.join(timeout=CALIBRATION_JOIN_S)  # let a round in flight finish
        self._collect_calibrations()
        if self.bursts is not None:
            self.bursts.close()
        self.energy.close()
        self._checkpoint()
        self._close_io()
        self.store.close()
        self.ctx.term()
        self.notifier.close()
        log.info("stopped cleanly in %.2f s (checkpoint generation %d)",
                 time.monotonic() - t0, self.store.generation)


def run_agent(config_path: Path, check_only: bool = False) -> int:
    """Run the agent until SIGTERM; return the process exit status."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    logging.getLogger().setLevel(cfg.log.level.upper())
    if check_only:
        try:
            load_bundle(cfg.model.bundle)
        except BundleError as exc:
            log.error("%s", exc)
            return EX_CONFIG
        print(f"{config_path}: configuration and model bundle are valid")
        return 0
    agent = Agent(cfg, config_path)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    signal.signal(signal.SIGHUP, agent.request_reload)
    try:
        agent.start()
    except (BundleError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        agent.notifier.status(f"failed: {exc}")
        return EX_CONFIG if isinstance(exc, BundleError) else 1
    try:
        agent.run()
    finally:
        agent.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_agent.service``: the agent without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="edge-agent run", description="Run the agent.")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_agent(args.config, args.check)
