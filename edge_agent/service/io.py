"""The agent's sockets: ingest sources, the PUB socket for predictions, the status server.

A part of :class:`edge_agent.service.agent.Agent`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from edge_agent.contracts import SampleSource
from edge_agent.ingest import ipc
from edge_agent.ingest.intake import Intake, Item
from edge_agent.ingest.protocol import Sample, encode_prediction
from edge_agent.ingest.serial_source import SerialSource
from edge_agent.ingest.zmq_source import ZmqSource
from edge_agent.service.config import AgentConfig
from edge_agent.service.model import Model
from edge_agent.service.status import StatusServer

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
        _topics: dict[str, bytes]  # sensor -> its prediction topic frame
        sources: list[SampleSource]
        status_server: StatusServer | None
        exporter: Any

        def _config(self) -> dict[str, Any]: ...

        def _count_control_error(self, reason: str) -> None: ...

        def _metrics(self) -> dict[str, Any]: ...

        def _ping(self) -> dict[str, Any]: ...

        def _request_checkpoint(self) -> Future[dict[str, Any]]: ...

        def _defer(self, cmd: str) -> Future[dict[str, Any]]: ...

        def status(self) -> dict[str, Any]: ...

    def _status_endpoints(self, cfg: AgentConfig) -> list[str]:
        return ([cfg.status_ipc] if cfg.status.ipc else []) + (
            [cfg.status.tcp] if cfg.status.tcp else []
        )

    def endpoints(self) -> dict[str, list[str]]:
        """Where the agent listens, with wildcard tcp ports resolved."""
        out: list[str] = []
        if self.pub is not None:
            out = [*self.cfg.output.endpoints[:-1], self.pub.getsockopt_string(zmq.LAST_ENDPOINT)]
        ingest = [ep for s in self.sources if isinstance(s, ZmqSource) for ep in s.endpoints]
        metrics = [self.exporter.url] if self.exporter is not None and self.exporter.url else []
        return {
            "ingest": ingest,
            "output": out,
            "status": self._status_endpoints(self.cfg),
            "metrics": metrics,
        }

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
            self._output_bound = list(cfg.output.endpoints)
            pub.setsockopt(zmq.SNDHWM, cfg.output.sndhwm)
            pub.setsockopt(zmq.LINGER, 0)
            for ep in cfg.output.endpoints:
                try:
                    ipc.prepare_bind(ep)  # never replace a regular file with the socket
                    pub.bind(ep)
                except (zmq.ZMQError, OSError) as exc:
                    raise RuntimeError(f"output socket {ep}: {exc}") from None
            if cfg.ingest.endpoints:
                self.sources.append(ZmqSource(self.ctx, cfg.ingest, self.intake))
            if cfg.serial.enabled:
                self.sources.append(SerialSource(cfg.serial, self.intake))
            if with_status:
                self.status_server = StatusServer(
                    self.ctx,
                    self._status_endpoints(cfg),
                    {
                        "ping": self._ping,
                        "status": self.status,
                        "metrics": self._metrics,
                        "config": self._config,
                    },
                    {
                        "checkpoint": self._request_checkpoint,
                        "collect": lambda: self._defer("collect"),
                        "reload": lambda: self._defer("reload"),
                    },
                    self._count_control_error,
                )
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
            ipc.remove_bound(self._output_bound)

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

    def _publish(
        self, samples: list[Item], classes: list[int], conf: list[float], done: float
    ) -> np.ndarray:
        """Send one prediction per sample (topic frame, then the message); the latencies
        from arrival to ``done`` in ms."""
        names = self.model.label_names
        version = self.model.engine.model_version
        assert self.pub is not None
        send, more = self.pub.send, zmq.SNDMORE
        topics = self._topics
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
            send(topic, more)
            send(encode_prediction(s.sensor, s.seq, s.ts, c, names[c], p, version, lat, s.label))
        return latencies
