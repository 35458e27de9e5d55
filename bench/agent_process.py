"""The agent as a real subprocess for end-to-end benchmarks, and a subscriber to its output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from edge_agent.client import ClientError, StatusClient

REPO = Path(__file__).resolve().parents[1]


def status(endpoint: str, cmd: str = "status") -> dict[str, Any]:
    """One request to the agent's status socket."""
    with StatusClient(endpoint, 5.0) as c:
        return c.request(cmd)


class Agent:
    """``python -m edge_agent.service --config CONFIG`` with its log in ``log_path``.

    ``cpus`` pins the agent (and the burst child it starts) to those CPUs; ``nice`` sets
    its nice value (the shipped unit runs it at ``Nice=-5``; below 0 needs root). Use as
    a context manager: entering waits until the status socket answers, leaving terminates.
    """

    def __init__(
        self,
        config: Path,
        status_endpoint: str,
        log_path: Path,
        cpus: Iterable[int] | None = None,
        ready_timeout_s: float = 120.0,
        nice: int | None = None,
    ) -> None:
        self.config = config
        self.status_endpoint = status_endpoint
        self.log_path = log_path
        self.cpus = set(cpus) if cpus is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, list[str]] = {}

    def __enter__(self) -> Agent:
        pin, nice = self.cpus, self.nice

        def setup() -> None:
            if pin:
                os.sched_setaffinity(0, pin)
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, 0, nice)

        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.service", "--config", str(self.config)],
                cwd=REPO,
                preexec_fn=setup if pin or nice is not None else None,
                stderr=log,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.log_path.read_text()[-4000:]}")
            try:
                self.endpoints = self.status()["endpoints"]
                return self
            except ClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        """The agent's current status."""
        return status(self.status_endpoint)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


class PredictionSink:
    """A thread collecting ``(receive time, prediction message)`` from the agent's output."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(endpoint)
        self.got: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        time.sleep(0.3)  # let the subscription reach the agent
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() or self._sub.poll(0):
            if self._sub.poll(50):
                frames = self._sub.recv_multipart()
                self.got.append((time.time(), msgpack.unpackb(frames[1])))

    def wait_for(self, count: int, timeout_s: float) -> None:
        """Wait until ``count`` predictions arrived or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the thread and close the socket."""
        time.sleep(0.2)
        self._stop.set()
        self._thread.join()
        self._sub.close()
        self._ctx.term()
