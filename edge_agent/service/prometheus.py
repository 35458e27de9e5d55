"""Prometheus exposition of the agent: a collector over ``status`` and its HTTP/textfile
outlets.

The collector keeps no numbers of its own: every scrape calls the agent's ``status``
(which reads the metrics registry) and the registry's latency histogram, so Prometheus and
``edge-agent status`` can never disagree. Every sample carries a ``board`` label.
Imported only when ``[metrics]`` is on, so an agent without metrics never loads
prometheus_client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from edge_agent.ingest.protocol import REASONS
from edge_agent.service.histogram import Histogram
from edge_agent.service.metrics_config import MetricsConfig

log = logging.getLogger(__name__)

P = "edge_agent_"
DROP_KINDS = ("unlabelled", "labelled")  # what the ingest queue sheds
StatusFn = Callable[[], dict[str, Any]]

# (metric name without prefix/_total, help, path into the status reply)
COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "samples_received",
        "Messages received on ingest (accepted or rejected).",
        ("samples", "received"),
    ),
    ("samples_accepted", "Samples accepted (labelled or not).", ("samples", "accepted")),
    (
        "samples_accepted_labelled",
        "Accepted samples that carried a label.",
        ("samples", "accepted_labelled"),
    ),
    ("samples_predicted", "Samples classified and published.", ("samples", "predicted")),
    ("labels_received", "Late label messages accepted.", ("samples", "feedback")),
    (
        "labels_unmatched",
        "Late labels whose sample was no longer held.",
        ("samples", "feedback_unmatched"),
    ),
    ("sequence_gaps", "Gaps in per-sensor sequence numbers.", ("samples", "seq_gaps")),
    ("sequence_missing_samples", "Samples missing in those gaps.", ("samples", "seq_missing")),
    (
        "labelled_predictions",
        "Predictions whose true label became known.",
        ("accuracy", "labelled_total"),
    ),
    ("labelled_correct", "Labelled predictions that were right.", ("accuracy", "labelled_correct")),
    ("checkpoints", "Checkpoints written.", ("storage", "checkpoints")),
    (
        "checkpoint_errors",
        "Checkpoints or model saves that failed.",
        ("storage", "checkpoint_errors"),
    ),
    (
        "model_reloads",
        "Model bundles loaded by a reload (SIGHUP or the reload command).",
        ("fleet", "reloads"),
    ),
    (
        "model_reload_failures",
        "Reloads refused (the running model was kept).",
        ("fleet", "reload_failures"),
    ),
    ("collects", "Fleet collect requests answered.", ("fleet", "collects")),
    ("bundle_pushes", "Pushed bundles the agent took and runs.", ("fleet", "pushes")),
    (
        "bundle_push_failures",
        "Pushed bundles refused (not loadable, or not storable).",
        ("fleet", "push_failures"),
    ),
    ("bundle_rollbacks", "Rollbacks to the bundle a push replaced.", ("fleet", "rollbacks")),
    (
        "bundle_rollback_failures",
        "Rollbacks refused (nothing pushed to go back from).",
        ("fleet", "rollback_failures"),
    ),
)

GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("uptime_seconds", "Seconds since the agent started.", ("agent", "uptime_s")),
    ("queue_depth", "Items waiting for inference.", ("queue", "depth")),
    ("queue_capacity", "Queue bound.", ("queue", "capacity")),
    ("predictions_per_second", "Prediction rate over the last 10 s.", ("prediction_rate_per_s",)),
    (
        "rolling_accuracy_ratio",
        "Accuracy over the latest labelled predictions.",
        ("accuracy", "rolling"),
    ),
    (
        "rolling_accuracy_samples",
        "Labelled predictions in the rolling accuracy.",
        ("accuracy", "n"),
    ),
    ("model_bits", "Weight bit-width the engine runs at.", ("model", "bits")),
    ("model_classes", "Classes of the running model.", ("model", "num_classes")),
    ("labelled_log_samples", "Labelled samples kept on disk.", ("buffer", "labelled")),
    ("qcore_buffer_samples", "Samples in the QCore buffer.", ("calibration", "buffer", "size")),
    (
        "qcore_buffer_labelled_samples",
        "Labelled samples in the QCore buffer.",
        ("calibration", "buffer", "labelled"),
    ),
    ("qcore_buffer_capacity_samples", "QCore buffer bound.", ("calibration", "buffer", "capacity")),
    (
        "calibration_pending_samples",
        "Stream samples waiting for the next calibration round.",
        ("calibration", "pending"),
    ),
    ("resident_memory_bytes", "Resident set size of the agent process.", ("rss_bytes",)),
    (
        "energy_burst_allowed",
        "1 when the energy policy allows a QAT burst.",
        ("energy", "burst_allowed"),
    ),
    (
        "energy_pressure",
        "1 when the energy policy asks for the pressure bit-width.",
        ("energy", "pressure"),
    ),
    ("energy_policy_bits", "Bit-width the energy policy asks for.", ("energy", "bits")),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, int | float) else None


class AgentCollector:
    """Builds every metric family from one ``status()`` call per scrape."""

    def __init__(self, status: StatusFn, histogram: Histogram, board: str) -> None:
        self.status = status
        self.histogram = histogram
        self.board = board
        self.errors = 0

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry must not call ``status`` at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape."""
        b = self.board
        try:
            st = self.status()
        except Exception:  # a scrape must never take the agent down, nor go unnoticed
            self.errors += 1
            log.exception("metrics scrape failed")
            st = None
        err = CounterMetricFamily(
            P + "scrape_errors", "Scrapes whose status read failed.", labels=["board"]
        )
        err.add_metric([b], self.errors)
        yield err
        if st is None:
            return
        yield from self._families(st, b)

    def _families(self, st: dict[str, Any], b: str) -> Iterator[Metric]:
        for name, doc, path in COUNTERS:
            v = _num(_get(st, path))
            if v is not None:
                c = CounterMetricFamily(P + name, doc, labels=["board"])
                c.add_metric([b], v)
                yield c
        for name, doc, path in GAUGES:
            v = _num(_get(st, path))
            if v is not None:
                g = GaugeMetricFamily(P + name, doc, labels=["board"])
                g.add_metric([b], v)
                yield g
        s = st.get("samples", {})
        rej = CounterMetricFamily(
            P + "samples_rejected", "Messages rejected, by reason.", labels=["board", "reason"]
        )
        # every known reason and kind from 0, so rate() and sum() work before the first one
        rejected = {**dict.fromkeys(REASONS, 0), **s.get("rejected", {})}
        for reason, n in sorted(rejected.items()):
            rej.add_metric([b, reason], n)
        yield rej
        drop = CounterMetricFamily(
            P + "samples_dropped",
            "Accepted items shed, by stage and kind.",
            labels=["board", "stage", "kind"],
        )
        for kind, n in sorted({**dict.fromkeys(DROP_KINDS, 0), **s.get("dropped", {})}.items()):
            drop.add_metric([b, "queue", kind], n)
        yield drop
        yield from self._control(st.get("control") or {}, b)
        cal = st.get("calibration", {})
        rounds = CounterMetricFamily(
            P + "calibration_rounds", "Bit-flip rounds, by outcome.", labels=["board", "outcome"]
        )
        for outcome, key in (
            ("kept", "accepted"),
            ("rolled_back", "rolled_back"),
            ("error", "errors"),
        ):
            rounds.add_metric([b, outcome], cal.get(key, 0))
        yield rounds
        yield from self._bursts(st.get("bursts") or {}, b)
        yield from self._info(st, b)
        ck = st.get("checkpoint") or {}
        if ck.get("time"):
            age = GaugeMetricFamily(
                P + "checkpoint_age_seconds", "Seconds since the last checkpoint.", labels=["board"]
            )
            # age_s is from the monotonic clock: right when NTP steps the wall clock
            age_s = ck.get("age_s", time.time() - float(ck["time"]))
            age.add_metric([b], max(0.0, float(age_s)))
            yield age
        yield self._latency(b)

    def _control(self, ctl: dict[str, Any], b: str) -> Iterator[Metric]:
        """Status requests answered with an error, and the CURVE socket's refusals."""
        err = CounterMetricFamily(
            P + "control_errors",
            "Status-socket requests answered with an error, by code.",
            labels=["board", "code"],
        )
        for code, n in sorted(ctl.get("errors", {}).items()):
            err.add_metric([b, code], n)
        yield err
        ref = CounterMetricFamily(
            P + "status_refused",
            "Clients the CURVE status socket refused, and allow-list files skipped, by reason.",
            labels=["board", "reason"],
        )
        for reason, n in sorted(ctl.get("refused", {}).items()):
            ref.add_metric([b, reason], n)
        yield ref

    def _bursts(self, bu: dict[str, Any], b: str) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            P + "bursts", "QAT bursts, by outcome.", labels=["board", "outcome"]
        )
        for outcome in ("started", "accepted", "rolled_back", "preempted", "failed"):
            fam.add_metric([b, outcome], bu.get(outcome, 0))
        yield fam
        cpu = CounterMetricFamily(
            P + "burst_cpu_seconds", "CPU seconds spent in QAT burst children.", labels=["board"]
        )
        cpu.add_metric([b], float(bu.get("cpu_s_total", 0.0)))
        yield cpu
        running = GaugeMetricFamily(
            P + "burst_running", "1 while a QAT burst runs.", labels=["board"]
        )
        running.add_metric(
            [b],
            float(bu.get("state", "idle") not in ("idle", None) and bu.get("enabled") is not False),
        )
        yield running

    def _info(self, st: dict[str, Any], b: str) -> Iterator[Metric]:
        agent, model = st.get("agent", {}), st.get("model", {})
        info = GaugeMetricFamily(
            P + "model_info",
            "The running model (value 1).",
            labels=["board", "model_version", "agent_version"],
        )
        info.add_metric([b, str(model.get("version", "")), str(agent.get("version", ""))], 1)
        yield info

    def _latency(self, b: str) -> Metric:
        buckets, total, _ = self.histogram.snapshot()
        h = HistogramMetricFamily(
            P + "inference_latency_seconds",
            "Received -> prediction published, per sample.",
            labels=["board"],
        )
        h.add_metric(
            [b], [("+Inf" if le == float("inf") else repr(le), n) for le, n in buckets], total
        )
        return h


class MetricsExporter:
    """The HTTP endpoint and/or the textfile writer over one :class:`AgentCollector`."""

    def __init__(self, cfg: MetricsConfig, status: StatusFn, histogram: Histogram) -> None:
        self.cfg = cfg
        self.collector = AgentCollector(status, histogram, cfg.board_name)
        # Our own registry: no process/GC collectors of the library's default one, whose
        # numbers `status` does not show.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._server: Any = None
        self._http_thread: threading.Thread | None = None
        self._file_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.textfile_errors = 0

    def start(self) -> None:
        """Bind the HTTP endpoint (errors raise RuntimeError) and start the textfile writer."""
        if self.cfg.http:
            host, port = self.cfg.host_port
            try:
                self._server, self._http_thread = start_http_server(port, host, self.registry)
            except OSError as exc:
                raise RuntimeError(f"metrics endpoint {self.cfg.listen}: {exc}") from None
        if self.cfg.textfile:
            self.write_textfile()  # a bad path shows at once, in the log
            self._file_thread = threading.Thread(
                target=self._file_loop, name="metrics-file", daemon=True
            )
            self._file_thread.start()

    @property
    def url(self) -> str | None:
        """The scrape URL (wildcard port resolved), or None without HTTP."""
        if self._server is None:
            return None
        host, _ = self.cfg.host_port
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._server.server_port}/metrics"

    def write_textfile(self) -> None:
        """Write the textfile atomically (a temporary file renamed over it)."""
        try:
            write_to_textfile(self.cfg.textfile, self.registry)
        except OSError as exc:
            self.textfile_errors += 1
            log.error("metrics textfile %s: %s", self.cfg.textfile, exc)

    def _file_loop(self) -> None:
        while not self._stop.wait(self.cfg.textfile_interval_s):
            self.write_textfile()

    def alive(self) -> bool:
        """Whether the threads that should run, run."""
        return all(t is None or t.is_alive() for t in (self._http_thread, self._file_thread))

    def stop(self) -> None:
        """Close the HTTP endpoint and stop the writer."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._file_thread is not None:
            self._file_thread.join(timeout=2.0)
