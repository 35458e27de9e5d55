"""The agent's main loop: load the model, restore state, run ingest -> inference -> outputs.

Threads: one per ingest source, one for the status socket; the main thread runs the
inference loop, checkpoints, reloads and watchdog pings, so everything that touches the
engine, the labelled buffer or the state store happens in one place.

Signals: SIGTERM/SIGINT stop ingest, finish queued work, checkpoint and exit 0;
SIGHUP reloads the configuration file.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_agent.bundle_io import to_bytes
from edge_agent.calibrate.burst_scheduler import BurstScheduler
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.routed import model_version
from edge_agent.calibrate.stream_offer import offer_batch
from edge_agent.contracts import SampleSource
from edge_agent.energy import EnergyDecision, EnergyMonitor
from edge_agent.engine.engine import ModelKey
from edge_agent.engine.logits import top_and_confidence
from edge_agent.ingest.intake import Intake, Item
from edge_agent.ingest.protocol import Feedback, Sample
from edge_agent.ingest.queue import DropQueue
from edge_agent.ingest.worker import name_os_thread
from edge_agent.service.config import AgentConfig
from edge_agent.service.energy_ops import EnergyOps
from edge_agent.service.fleet_ops import FleetOps
from edge_agent.service.io import Sockets
from edge_agent.service.metrics import Metrics
from edge_agent.service.model import Model, load_running_model
from edge_agent.service.notify import Notifier
from edge_agent.service.persist import Persistence
from edge_agent.service.report import StatusReport
from edge_agent.service.scheduling import lower_own_priority
from edge_agent.service.state import LabelledSample, StateStore
from edge_agent.service.status import StatusServer

log = logging.getLogger("edge_agent.agent")

EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus keeps it from looping
DRAIN_DEADLINE_S = 5.0
STATUS_EVERY_S = 5.0
IDLE_WAIT_S = 0.1
CALIBRATION_POLL_S = 0.2
# The calibration thread's wait while inference is behind (more than a batch queued): it
# starts no job meanwhile, so neither its CPU nor its hold of the GIL delays the backlog.
CALIBRATION_BACKOFF_S = 0.01
CALIBRATION_JOIN_S = 2.0
# Added to the calibration thread's nice value: on a busy core inference and ingest come
# first and calibration sheds its work (rounds_skipped, updates_dropped). At +5 (0 under
# Nice=-5) a loaded 2-core machine dropped samples in the soak (bench/results/soak.md).
CALIBRATION_NICE = 10


class Agent(Sockets, Persistence, StatusReport, FleetOps, EnergyOps):
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
        self._ckpt_writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._ckpt_writing = None
        self._stopping = self._reload = False
        self._init_fleet()
        self._last_ckpt: dict[str, Any] = {}
        self._disk_errors: dict[str, str] = {}  # what -> last error, while it fails
        self._unsaved_model: bytes | None = None  # saved at the next checkpoint
        self.model_fallback: dict[str, Any] | None = None  # set when model.eab was damaged
        self._base_sha = ""
        self.model: Model
        self.intake: Intake
        self.sources: list[SampleSource] = []
        self.realtime_threads: list[int] = []
        self.status_server: StatusServer | None = None
        self.remote_status: StatusServer | None = None
        self.pub: zmq.Socket[bytes] | None = None
        self._output_bound: list[str] = []
        self._output_endpoints: list[str] = []
        self._topics: dict[str, bytes] = {}
        self.calibration: CalibrationController | None = None
        self._cal_results: queue.SimpleQueue[
            tuple[CalibrationController, RoundResult | Exception]
        ] = queue.SimpleQueue()
        self._cal_thread: threading.Thread | None = None
        self.calibration_busy = False  # a job in flight (status: the demo waits for it)
        # the latest rounds with the sample last predicted when each ended (status: the
        # demo marks every round where it took effect)
        self.rounds: deque[dict[str, Any]] = deque(maxlen=64)
        self._last_predicted: tuple[str, int] | None = None
        self.energy = EnergyMonitor(cfg.energy)
        self._energy: EnergyDecision | None = None
        self.bursts = (
            BurstScheduler(self.cfg.state_dir / "burst", cfg.bursts.scheduler)
            if cfg.bursts.enabled
            else None
        )

    # ------------------------------------------------------------ start-up

    def start(self) -> None:
        """Restore state, load the model, open sockets, start threads, tell systemd."""
        t0 = time.monotonic()
        with self.notifier.starting():  # JIT compiling can outlast TimeoutStartSec
            self._start_up(t0)
        self.notifier.ready(self._status_line())
        log.info(
            "ready in %.1f s: ingest %s, predictions %s, status %s",
            time.monotonic() - t0,
            self._ingest_endpoints(),
            ", ".join(self.cfg.output.endpoints),
            ", ".join(self._status_endpoints(self.cfg)),
        )

    def _start_up(self, t0: float) -> None:
        """Everything before READY=1: state, model (JIT-compiled if no AOT), sockets, threads."""
        self.notifier.status("loading model")
        payload, samples = self.store.restore()
        self.model = self._load_model(payload)
        eng = self.model.engine
        log.info(
            "model %s loaded from %s: input %s, %d classes (JIT warm after %.1f s)",
            eng.model_version,
            self.model.path,
            list(eng.input_shape),
            eng.num_classes,
            time.monotonic() - t0,
        )
        self.intake = Intake(
            self.queue,
            self.metrics,
            tuple(eng.input_shape),
            eng.num_classes,
            self.cfg.ingest.max_message_bytes,
        )
        self.labelled.extend(samples)
        self._start_calibration(payload.get("calibration") if payload else None)
        if payload is not None:
            self._last_ckpt = self._restored_checkpoint(payload)
            counts = payload.get("counts", {})
            self.metrics.restore(
                counts.get("counters", {}), counts.get("rejected", {}), counts.get("dropped", {})
            )
            self.intake.restore_sequences(payload.get("sequences", {}))
        self._open_io(self.cfg)
        self._start_exporter()
        self._cal_thread = threading.Thread(
            target=self._calibration_loop, name="calibration", daemon=True
        )
        self._cal_thread.start()

    def _load_model(self, payload: dict[str, Any] | None) -> Model:
        base = self._bundle_path(self.cfg)  # a pushed bundle, or the configured one
        model, self._base_sha, self.model_fallback = load_running_model(
            self.store, base, payload, self._save_model
        )
        self._base_path, self._base_mtime = base, os.stat(base).st_mtime
        return model

    def _start_calibration(self, state: dict[str, Any] | None, carry: bool = False) -> None:
        """The QCore buffer and bit-flip calibrator of the running model (if enabled)."""
        old, self.calibration = self.calibration, None
        if self.cfg.calibration.enabled:
            bundle, cfg, carried = self.model.bundle, self.cfg.calibration, old if carry else None
            self.calibration = CalibrationController(bundle, cfg, state, self.metrics.inc, carried)

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`)."""
        cfg_interval = self.cfg.state.checkpoint_interval_s
        next_ckpt = time.monotonic() + cfg_interval
        next_status = time.monotonic() + STATUS_EVERY_S
        next_watchdog = time.monotonic()
        next_energy = time.monotonic()
        while not self._stopping:
            inf = self.cfg.inference
            batch = self.queue.get_batch(inf.batch_max, IDLE_WAIT_S, inf.batch_wait_ms / 1e3)
            if batch:
                self._process(batch)
            self._collect_calibrations()
            now = time.monotonic()
            if now >= next_energy:
                self._energy_tick()
                next_energy = now + self.cfg.bursts.energy_poll_s
            self._finish_checkpoint()
            if (now >= next_ckpt or not self._ckpt_requests.empty()) and self._checkpoint():
                next_ckpt = now + self.cfg.state.checkpoint_interval_s
            if self._reload:
                self._reload = False
                self._reload_config()
            self._serve_requests()  # collect / reload from the status socket
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
        assignment); its results go back to the main thread, which owns the state store.
        It runs at a lower priority, so on a busy core inference and ingest come first and
        the calibration thread takes the CPU time they leave."""
        name_os_thread("calibration")
        lower_own_priority(CALIBRATION_NICE)
        while not self._stopping:
            ctl = self.calibration
            busy = self.bursts is not None and self.bursts.state != "idle"
            if ctl is None or busy or not ctl.due():
                time.sleep(CALIBRATION_POLL_S)
                continue
            if len(self.queue) > self.cfg.inference.batch_max:
                time.sleep(CALIBRATION_BACKOFF_S)
                continue
            self.calibration_busy = True
            try:
                result: RoundResult | Exception | None = ctl.run(self.model.engine)
            except Exception as exc:  # a calibration bug must never stop the agent
                log.exception("calibration round failed; the model is unchanged")
                result = exc
            self.calibration_busy = False
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
            sensor, seq = self._last_predicted or ("", -1)
            self.rounds.append({"kept": result.version is not None, "sensor": sensor, "seq": seq})
            if result.version is None:
                self.metrics.inc("calibrations_rolled_back")
                continue
            self.metrics.inc("calibrations_accepted")
            if ctl is not self.calibration:  # the model was replaced meanwhile
                continue
            eng = self.model.engine
            self._save_model(to_bytes(ctl.bundle.with_codes(eng.bits, eng.codes())))

    def _threads_alive(self) -> bool:
        dead = [name for name, alive in self.threads().items() if not alive]
        if dead:
            log.error("thread(s) died: %s; withholding the watchdog ping", ", ".join(dead))
        return not dead

    def _process(self, batch: list[Item]) -> None:
        """Predict a batch, log its labelled samples, publish the predictions (so a
        published prediction implies its labelled sample is already in the log), then let
        the calibration see the batch: its stream work (drift scores, chunks) comes after
        the predictions went out, not before."""
        samples = [it for it in batch if isinstance(it.msg, Sample)]
        classes: list[int] = []
        if samples:
            t0 = time.perf_counter()
            X, logits, key = self._infer(samples)
            cls, conf = top_and_confidence(logits)
            self._last_predicted = (samples[-1].msg.sensor, samples[-1].msg.seq)
            done = time.perf_counter()
            classes = cls.tolist()
        fresh: list[LabelledSample] = []
        # what the calibration hears, in arrival order: (sample index, label, seq) or a
        # matched label
        heard: list[tuple[int, int | None, int] | Feedback] = []
        window = self.cfg.inference.feedback_window
        k = 0  # index of the next sample in X / classes
        for it in batch:
            msg = it.msg
            if isinstance(msg, Sample):
                pred, x = classes[k], X[k]
                heard.append((k, msg.label, msg.seq))
                k += 1
                if msg.label is not None:
                    fresh.append(self._labelled(msg.sensor, msg.seq, msg.ts, msg.label, pred, x))
                elif window:
                    self._recent[(msg.sensor, msg.seq)] = (x, pred)
                    if len(self._recent) > window:
                        self._recent.popitem(last=False)
            else:
                matched = self._feedback(msg)
                if matched:
                    heard.append(msg)
                fresh.extend(matched)
        if fresh:
            self._log_labelled(fresh)
            self.labelled.extend(fresh)
        if samples:
            latencies = self._publish(samples, classes, conf.tolist(), done, model_version(key))
            self.metrics.record_batch(len(samples), (done - t0) * 1e3, latencies)
        if self.calibration is not None and heard:
            offer_batch(self.calibration, (X, logits, key) if samples else None, heard)

    def _infer(self, samples: list[Item]) -> tuple[np.ndarray, np.ndarray, ModelKey]:
        """The inference step, the one place the running model sees samples: the batch
        as the model takes it, its logits and the key of the model that computed them."""
        eng = self.model.engine  # everything after ingest sees the prepared samples only
        X = eng.prepare(np.stack([it.msg.x for it in samples]))  # type: ignore[union-attr]
        ctl = self.calibration  # routed to each sample's domain when it keeps a bank
        logits, key = (eng if ctl is None else ctl.predictor(eng, count=True)).predict_logits_keyed(
            X
        )
        return X, logits, key

    def _labelled(
        self, sensor: str, seq: int, ts: float, label: int, pred: int, x: np.ndarray
    ) -> LabelledSample:
        self.metrics.record_outcome(pred == label)
        return LabelledSample(sensor, seq, ts, label, pred, x)

    def _feedback(self, fb: Feedback) -> list[LabelledSample]:
        hit = self._recent.pop((fb.sensor, fb.seq), None)
        if hit is None:
            self.metrics.inc("feedback_unmatched")
            return []
        x, pred = hit
        return [self._labelled(fb.sensor, fb.seq, time.time(), fb.label, pred, x)]

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
            log.warning(
                "shutdown: %d queued items not processed within %.0f s", left, DRAIN_DEADLINE_S
            )
        if self._cal_thread is not None:
            self._cal_thread.join(timeout=CALIBRATION_JOIN_S)  # let a round in flight finish
        self._collect_calibrations()
        if self.bursts is not None:
            self.bursts.close()
        self.energy.close()
        self._checkpoint(wait=True)
        self._ckpt_writer.shutdown()
        self._stop_exporter()
        self._close_io()
        self.store.close()
        self.ctx.term()
        self.notifier.close()
        log.info(
            "stopped cleanly in %.2f s (checkpoint generation %d)",
            time.monotonic() - t0,
            self.store.generation,
        )
