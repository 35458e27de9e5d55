"""The named contracts (edge_agent.contracts) hold for the classes that play each part."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import zmq

from edge_agent.calibrate.controller import CalibrationController
from edge_agent.contracts import Calibrator, Predictor, SampleSource
from edge_agent.engine.engine import Engine
from edge_agent.ingest.serial_source import SerialSource
from edge_agent.ingest.worker import ThreadWorker
from edge_agent.ingest.zmq_source import ZmqSource
from edge_agent.service.status import StatusServer

ROOT = Path(__file__).resolve().parent.parent


def test_the_parts_meet_their_contracts() -> None:
    assert issubclass(Engine, Predictor)
    assert issubclass(CalibrationController, Calibrator)
    for cls in (ZmqSource, SerialSource, StatusServer):
        assert issubclass(cls, SampleSource)
        assert issubclass(cls, ThreadWorker)


def test_one_predict_alias() -> None:
    defined = []
    for path in sorted((ROOT / "edge_agent").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "Predict" for t in targets):
                    defined.append(str(path.relative_to(ROOT)))
    assert defined == ["edge_agent/contracts.py"]


def test_thread_worker_runs_until_stopped_and_releases_when_never_started() -> None:
    class Ticker(ThreadWorker):
        thread_name = "ticker"

        def __init__(self) -> None:
            self.ran = threading.Event()
            self.released = False
            super().__init__()

        def _run(self) -> None:
            self.ran.set()
            self._stop.wait()

        def _release_unstarted(self) -> None:
            self.released = True

    t = Ticker()
    assert not t.alive()
    t.start()
    assert t.ran.wait(5) and t.alive()
    t.stop()
    assert not t.alive() and not t.released
    idle = Ticker()
    idle.stop()
    assert idle.released and not idle.ran.is_set()


def test_status_server_stopped_unstarted_closes_its_socket() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        server = StatusServer(ctx, ["inproc://contracts-status"], {}, {}, lambda _: None)
        server.stop()
        assert server.sock.closed and not server.alive()
    finally:
        ctx.term()
