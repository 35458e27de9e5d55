"""Ctrl-C (SIGINT) in ``train`` and ``demo``: a clean exit, no traceback, nothing left
running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _interrupt_when(
    args: list[str], marker: str, cwd: Path, timeout: float = 300
) -> tuple[int, str, list[int]]:
    """Run ``edge-agent ARGS`` and send SIGINT once ``marker`` is on its stderr: (exit
    status, stderr, its child processes just before the signal)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    err = bytearray()
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):
            err.extend(chunk)
            if marker.encode() in err:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(timeout), err.decode(errors="replace")[-3000:]
        time.sleep(1.0)  # well inside the work
        children = _children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return rc, err.decode(errors="replace"), children


def test_ctrl_c_in_train_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "m.eab"
    args = ["train", "--data", "basicmotions", "--bits", "4", "--fp-steps", "100000"]
    rc, err, _ = _interrupt_when([*args, "--out", str(out)], "FP training", tmp_path)
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted" in err
    assert not out.exists()


def test_ctrl_c_in_demo_exits_cleanly_and_stops_the_agent(tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    args = ["demo", "--count", "100000", "--rate", "300", "--plot", str(png)]
    rc, err, children = _interrupt_when(args, "predicted (", tmp_path)
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err and "ZMQError" not in err, err[-3000:]
    assert "interrupted" in err
    assert not png.exists()
    assert children, "the demo runs the agent as a child process"
    time.sleep(0.5)
    assert [c for c in children if Path(f"/proc/{c}").exists()] == [], "the agent outlived it"
