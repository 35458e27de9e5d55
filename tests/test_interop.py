"""A publisher in another language, written from docs/protocol.md alone, against the agent
as a real subprocess (Node.js; needs ``node`` and ``npm ci --prefix tests/interop``, which
scripts/test.sh runs where npm is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

INTEROP = Path(__file__).parent / "interop"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (INTEROP / "node_modules" / "zeromq").is_dir(),
    reason="needs node and `npm ci --prefix tests/interop`",
)


def test_node_publisher_written_from_the_protocol_document(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "model.eab")
    d = short_dir()
    agent = AgentProcess(write_config(d, bundle))
    try:
        agent.wait_ready()
        assert NODE is not None
        done = subprocess.run(
            [
                NODE,
                str(INTEROP / "node_publisher.js"),
                agent.status_ep,
                f"ipc://{d}/in.sock",
                f"ipc://{d}/out.sock",
                "300",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{agent.log()}"
        status = agent.status()
        assert status["samples"]["rejected_total"] == 13
    finally:
        agent.stop()
        cleanup(d)
