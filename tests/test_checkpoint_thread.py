"""Checkpoints are written on their own thread: the inference loop only snapshots the
state, and the labelled log goes on (and rotates) while a write is under way."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from edge_agent.service.agent import Agent
from edge_agent.service.config import local_config_text, parse_config
from edge_agent.service.state import LabelledSample, StateStore

BUNDLE = Path("edge_agent/defaults/basicmotions.eab").resolve()


def _sample(i: int) -> LabelledSample:
    return LabelledSample("s", i, float(i), i % 4, -1, np.full((6, 100), i, np.float32))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_log_goes_on_while_a_checkpoint_is_written_elsewhere(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=2, capacity=4)
    store.restore()
    store.append_labelled([_sample(i) for i in range(3)])
    fds = _fds()
    pending = store.prepare_checkpoint({"counts": {"n": 1}})
    assert pending.log_fd is not None and _fds() == fds + 1  # the log's duplicate
    writer = threading.Thread(target=store.write_checkpoint, args=(pending,))
    writer.start()
    for i in range(3, 20):  # rotates the segment (4 records each) under the writer
        store.append_labelled([_sample(i)])
    writer.join()
    assert pending.log_fd is None and pending.log_error is None and _fds() == fds
    assert pending.path.name == "checkpoint-000000000001.eas" and pending.ms > 0
    store.close()
    payload, samples = StateStore(tmp_path, capacity=8).restore()
    assert payload is not None and payload["generation"] == 1
    assert payload["counts"] == {"n": 1}
    assert [s.seq for s in samples] == list(range(12, 20))  # the newest 8, in order


def test_the_agent_snapshots_on_its_thread_and_reports_when_written() -> None:
    d = Path(tempfile.mkdtemp(prefix="eab-ckt-", dir="/tmp"))
    agent = Agent(parse_config(local_config_text(d, BUNDLE, '[log]\nlevel = "warning"\n')))
    agent.start()
    try:
        request = agent._request_checkpoint()
        assert agent._checkpoint()  # snapshot taken, the write handed over
        assert not agent._checkpoint()  # one write at a time: the loop tries again
        assert agent.metrics.counts()["counters"].get("checkpoints", 0) == 0
        agent._finish_checkpoint(block=True)
        info = request.result(timeout=0)
        assert info["generation"] == 1 and Path(info["path"]).is_file() and info["ms"] > 0
        assert agent.status()["checkpoint"]["generation"] == 1
        assert agent.metrics.counts()["counters"]["checkpoints"] == 1
    finally:
        agent.request_stop()
        agent.shutdown()  # its final checkpoint waits for the write
    assert sorted(p.name for p in (d / "state").glob("checkpoint-*.eas"))[-1] == (
        "checkpoint-000000000002.eas"
    )
