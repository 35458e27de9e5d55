"""Helpers (no tests) for the fault tests: small file systems, the state directory's
files read back from outside, a process's CPU time and open file descriptors."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.bundle_io import load_bundle
from edge_agent.service.state import _CKPT_RE, _RECORD, _SEG_RE, decode_checkpoint


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def need_root() -> None:
    """Skip unless root (mounting needs it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system for the state directory")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mount is refused)."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, mode: str) -> bool:
    """``mount -o remount,<mode>``; False while the kernel says the mount is busy."""
    done = subprocess.run(
        ["mount", "-o", f"remount,{mode}", str(path)], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file into ``directory`` until its file system is full."""
    path = directory / name
    chunk = b"\xa5" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last partial page
            while True:
                f.write(b"\xa5" * 512)
        except OSError:
            pass
    return path


def check_state_files(state: Path) -> dict[str, int]:
    """Read every file the agent keeps in ``state`` as a restart would; raise if the
    newest checkpoint or the model is damaged, a temp file is left, or a labelled log
    segment ends in a torn record. Returns the newest generation and the log's records."""
    names = sorted(p.name for p in state.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    ckpts = sorted(p for p in state.iterdir() if _CKPT_RE.match(p.name))
    assert ckpts, names
    newest = decode_checkpoint(ckpts[-1].read_bytes(), str(ckpts[-1]))
    load_bundle(str(state / "model.eab"))
    records = 0
    for seg in sorted(p for p in state.iterdir() if _SEG_RE.match(p.name)):
        data = seg.read_bytes()
        pos = 0
        while pos + _RECORD.size <= len(data):
            length, _ = _RECORD.unpack_from(data, pos)
            pos += _RECORD.size + length
            records += 1
        assert pos == len(data), f"{seg.name}: torn tail ({len(data) - pos} bytes)"
    return {"generation": int(newest["generation"]), "records": records}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many file descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """A process's resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
