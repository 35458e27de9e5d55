"""The agent's sockets: ingest sources, the PUB socket for predictions, the status server.

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import errno
import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import zmq

from edge_agent.contracts import SampleSource
from edge_agent.curve_keys import KeyFileError
from edge_agent.ingest import ipc
from edge_agent.ingest.control import Request
from edge_agent.ingest.intake import Intake, Item
from edge_agent.ingest.protocol import Sample, encode_prediction
from edge_agent.ingest.serial_source import SerialSource
from edge_agent.ingest.worker import ThreadWorker
from edge_agent.ingest.zmq_source import ZmqSource
from edge_agent.service.config import AgentConfig, ConfigError
from edge_agent.service.model import Model
from edge_agent.service.scheduling import promote_hot_threads
from edge_agent.service.status import StatusServer
from edge_agent.service.status_curve import CurveGuard, describe

log = logging.getLogger("edge_agent.agent")

MAX_TOPICS = 4096  # cached prediction topics (one per sensor)


class Sockets:
    """The agent's sockets: ingest sources, the PUB socket for predictions, the status server."""

    if TYPE_CHECKING:  # what the other parts of Agent provide
        cfg: AgentConfig
        ctx: zmq.Context[zmq.Socket[bytes]]
        intake: Intake
        model: Model
        pub: zmq.Socket[bytes] | None
        _output_bound: list[str]  # the output endpoints bound (ipc files to remove)
        _output_endpoints: list[str]  # the same, wildcard ports resolved
        _topics: dict[str, bytes]  # sensor -> its prediction topic frame
        sources: list[SampleSource]
        realtime_threads: list[int]  # the thread ids under SCHED_RR
        status_server: StatusServer | None
        remote_status: StatusServer | None  # the CURVE one
        exporter: Any

        def _config(self) -> dict[str, Any]: ...

        def _count_control_error(self, reason: str) -> None: ...

        def _metrics(self) -> dict[str, Any]: ...

        def _ping(self) -> dict[str, Any]: ...

        def _request_checkpoint(self) -> Future[dict[str, Any]]: ...

        def _defer(self, req: Request) -> Future[dict[str, Any]]: ...

        def _count(self, name: str) -> None: ...

        def status(self) -> dict[str, Any]: ...

    def _status_endpoints(self, cfg: AgentConfig) -> list[str]:
        """The local (ipc, plain tcp) status endpoints."""
        return ([cfg.status_ipc] if cfg.status.ipc else []) + (
            [cfg.status.tcp] if cfg.status.tcp else []
        )

    def endpoints(self) -> dict[str, list[str]]:
        """Where the agent listens, with wildcard tcp ports resolved."""
        out = list(self._output_endpoints) if self.pub is not None else []
        ingest = [ep for s in self.sources if isinstance(s, ZmqSource) for ep in s.endpoints]
        metrics = [self.exporter.url] if self.exporter is not None and self.exporter.url else []
        remote = [self.cfg.status.curve.endpoint] if self.remote_status is not None else []
        return {
            "ingest": ingest,
            "output": out,
            "status": self._status_endpoints(self.cfg),
            "status_curve": remote,
            "metrics": metrics,
        }

    def _ingest_endpoints(self) -> str:
        eps = [ep for s in self.sources if isinstance(s, ZmqSource) for ep in s.endpoints]
        eps += [f"serial {s.cfg.port}" for s in self.sources if isinstance(s, SerialSource)]
        return ", ".join(eps) or "none"

    def _open_io(
        self, cfg: AgentConfig, with_status: bool = True, with_output: bool = True
    ) -> None:
        """Open ingest, (``with_output``) output and (``with_status``) status sockets for
        ``cfg`` and start their threads."""
        try:
            if with_output:
                self._open_output(cfg)
            if cfg.ingest.endpoints:
                self.sources.append(ZmqSource(self.ctx, cfg.ingest, self.intake))
            if cfg.serial.enabled:
                self.sources.append(SerialSource(cfg.serial, self.intake))
            if with_status:
                self._open_status(cfg)
        except BaseException:
            self._close_io(with_status, with_output)
            raise
        for src in self.sources:
            src.start()
        receivers = [s.native_id for s in self.sources if isinstance(s, ThreadWorker)]
        self.realtime_threads = promote_hot_threads(
            cfg.inference.realtime_priority, [t for t in receivers if t is not None], self._count
        )
        if with_status:
            for server in (self.status_server, self.remote_status):
                if server is not None:
                    server.start()

    def _open_status(self, cfg: AgentConfig) -> None:
        """The local status server and, with ``[status.curve]``, the remote one."""
        handlers = {
            "ping": self._ping,
            "status": self.status,
            "metrics": self._metrics,
            "config": self._config,
        }
        deferred = {
            "checkpoint": lambda _req: self._request_checkpoint(),
            "collect": self._defer,
            "reload": self._defer,
            "push": self._defer,
            "rollback": self._defer,
        }
        push = cfg.status.max_push_bytes
        if self._status_endpoints(cfg):
            self.status_server = StatusServer(
                self.ctx,
                self._status_endpoints(cfg),
                handlers,
                deferred,
                self._count_control_error,
                push,
            )
        curve = cfg.status.curve
        if not curve.endpoint:
            return
        try:
            guard = CurveGuard(curve, cfg.state_dir, lambda r: self._count(f"status_refused_{r}"))
        except (KeyFileError, OSError) as exc:  # a configuration problem: exit 78, no restarts
            raise ConfigError(f"status.curve: {exc}") from None
        try:
            self.remote_status = StatusServer(
                guard.ctx,
                [curve.endpoint],
                handlers,
                deferred,
                self._count_control_error,
                push,
                guard,
            )
        except RuntimeError:
            guard.close()
            raise
        log.info("remote status socket %s (CURVE): %s", curve.endpoint, describe(guard))

    def _reload_status_keys(self) -> None:
        """Re-read the remote status socket's allow-list (SIGHUP)."""
        if self.remote_status is not None and self.remote_status.curve is not None:
            try:
                self.remote_status.curve.reload_keys()
            except KeyFileError as exc:  # the directory vanished: keep the keys we had
                log.error("status.curve.authorized_keys: %s; keeping the loaded keys", exc)
                self._count("status_refused_bad_key_file")

    def _open_output(self, cfg: AgentConfig) -> None:
        pub = self.ctx.socket(zmq.PUB)
        self.pub = pub
        self._output_bound = list(cfg.output.endpoints)
        pub.setsockopt(zmq.SNDHWM, cfg.output.sndhwm)
        pub.setsockopt(zmq.LINGER, 0)
        for ep in cfg.output.endpoints:
            try:
                ipc.prepare_bind(ep)  # never replace a regular file with the socket
                _bind_retrying(pub, ep)
            except (zmq.ZMQError, OSError) as exc:
                raise RuntimeError(f"output socket {ep}: {exc}") from None
        # read once: the main thread sends on this socket while status asks from another
        last = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._output_endpoints = [*cfg.output.endpoints[:-1], last]

    def _close_io(self, with_status: bool = True, with_output: bool = True) -> None:
        for src in self.sources:
            src.stop()
        self.sources = []
        if with_status:
            for server in (self.status_server, self.remote_status):
                if server is not None:
                    server.stop()
            self.status_server = self.remote_status = None
        if with_output and self.pub is not None:
            self.pub.close(linger=0)
            self.pub = None
            ipc.remove_bound(self._output_bound)

    def _reopen_io(self, new: AgentConfig, old: AgentConfig) -> None:
        # The status and output sockets stay up through a reload unless their own settings
        # change: libzmq releases a closed socket's port asynchronously, so binding the
        # same address again at once can fail with EADDRINUSE.
        status = new.status != old.status
        output = new.output != old.output
        self._close_io(status, output)
        try:
            self._open_io(new, status, output)
        except (RuntimeError, zmq.ZMQError, OSError, ConfigError):
            self._open_io(old, status, output)
            raise
        log.info("sockets reopened: ingest %s", self._ingest_endpoints())

    def _publish(
        self, samples: list[Item], classes: list[int], conf: list[float], done: float, version: str
    ) -> np.ndarray:
        """Send one prediction per sample (topic frame, then the message) made by the model
        ``version``; the latencies from arrival to ``done`` in ms."""
        names = self.model.label_names
        assert self.pub is not None
        # libzmq's send through pyzmq's backend class, which zmq.Socket extends: the same
        # call for these small frames (under pyzmq's copy threshold) without the Python
        # checks zmq.Socket.send adds to every frame (two frames: 0.81 -> 0.37 us)
        send, pub, more = zmq.backend.Socket.send, self.pub, zmq.SNDMORE
        topics = self._topics
        pack = msgpack.Packer(use_bin_type=True).pack  # one per batch, not per message
        arrived = np.fromiter((it.arrived for it in samples), np.float64, len(samples))
        latencies = (done - arrived) * 1e3
        for it, c, p, lat in zip(samples, classes, conf, latencies.tolist(), strict=True):
            s = it.msg
            assert isinstance(s, Sample)
            topic = topics.get(s.sensor)
            if topic is None:
                if len(topics) >= MAX_TOPICS:  # bounded: sensors come and go
                    topics.clear()
                topic = topics[s.sensor] = b"pred/" + s.sensor.encode()
            send(pub, topic, more)
            send(
                pub,
                encode_prediction(
                    s.sensor, s.seq, s.ts, c, names[c], p, version, lat, s.label, pack
                ),
            )
        return latencies


def _bind_retrying(sock: zmq.Socket[bytes], endpoint: str, within_s: float = 1.0) -> None:
    """Bind, retrying EADDRINUSE for up to ``within_s``: a port this process closed a moment
    ago (a reload rolling back to its old endpoints) is freed by libzmq asynchronously."""
    end = time.monotonic() + within_s
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > end:
                raise
            time.sleep(0.02)
