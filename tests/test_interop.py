"""A publisher in another language, written from docs/protocol.md alone, against the agent
as a real subprocess (Node.js; needs ``node`` and ``npm ci --prefix tests/interop``, which
scripts/test.sh runs where npm is installed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

INTEROP = Path(__file__).parent / "interop"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (INTEROP / "node_modules" / "zeromq").is_dir(),
    reason="needs node and `npm ci --prefix tests/interop`",
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    """One agent for both scripts (each counts from the counters it finds)."""
    bundle = make_bundle(tmp_path_factory.mktemp("interop") / "model.eab")
    d = short_dir()
    proc = AgentProcess(write_config(d, bundle))
    try:
        proc.wait_ready()
        yield proc, d
    finally:
        proc.stop()
        cleanup(d)


def _node(script: str, agent: tuple[AgentProcess, Path], *extra: str) -> None:
    proc, d = agent
    assert NODE is not None
    endpoints = [proc.status_ep, f"ipc://{d}/in.sock", f"ipc://{d}/out.sock"]
    done = subprocess.run(
        [NODE, str(INTEROP / script), *endpoints, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{proc.log()}"


def test_node_publisher_written_from_the_protocol_document(
    agent: tuple[AgentProcess, Path],
) -> None:
    before = agent[0].status()["samples"]["rejected_total"]
    _node("node_publisher.js", agent, "300")
    assert agent[0].status()["samples"]["rejected_total"] - before == 13


def test_the_edge_cases_the_protocol_document_states(agent: tuple[AgentProcess, Path]) -> None:
    # seq gap/restart/wrap at 2^64-1, limits, labels, dtypes, predictions, status codes
    _node("node_edges.js", agent)
