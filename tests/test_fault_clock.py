"""Wall-clock jumps under a running agent: a board without a real-time clock boots in
1970, NTP steps it 56 years forward, then a bad time source steps it back 3 years and
back to 1970 again.

The agent runs as a real subprocess with a small LD_PRELOAD shim
(``support/clockshift.c``) that shifts its CLOCK_REALTIME (Python's ``time.time``,
``datetime.now``, libc's ``time``/``gettimeofday``) by an offset the test changes
mid-run, while the monotonic clocks run on untouched, exactly as when ``date -s`` or
NTP steps the clock. (libfaketime cannot do this here: with its monotonic clock left
alone, Python's ``time.sleep`` fails with EINVAL; with it faked, the jump shows in the
monotonic clock too, which a real step never does.)

In every phase: checkpoints keep their interval, watchdog pings keep theirs, the
prediction rate and uptime stay right, the checkpoint's age (in ``status`` and in
``edge-agent status``) is seconds, and timestamps follow the wall clock."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_service_support import (
    REPO,
    AgentProcess,
    write_config,
)

from edge_agent.client import Publisher
from edge_agent.data import load_dataset
from edge_agent.service.state import _CKPT_RE, decode_checkpoint

PHASE_S = 3.0
CHECKPOINT_S = 0.5
WATCHDOG_S = 2.0  # WATCHDOG_USEC: the agent pings every 1 s
RATE = 100.0
YEAR_S = 365 * 86400


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the clock shim")
    out = tmp_path_factory.mktemp("shim") / "clockshift.so"
    src = Path(__file__).parent / "support" / "clockshift.c"
    done = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


class Watchdog:
    """A NOTIFY_SOCKET that records when each WATCHDOG=1 arrives (monotonic)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.pings: list[float] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in msg:
                self.ready.set()
            if "WATCHDOG=1" in msg:
                self.pings.append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _feed(endpoint: str, stop: threading.Event) -> None:
    ds = load_dataset("basicmotions")
    with Publisher(endpoint) as pub:
        t0, seq = time.monotonic(), 0
        while not stop.is_set():
            pub.send_sample("s", seq, ds.X_test[seq % 40], int(ds.y_test[seq % 40]))
            seq += 1
            time.sleep(max(0.0, t0 + seq / RATE - time.monotonic()))


def _cli_age(status_ep: str) -> float:
    """``edge-agent status``'s checkpoint age, run with the real clock."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "status", "--endpoint", status_ep],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"checkpoint +generation \d+, (-?[\d.e+]+) s ago", done.stdout)
    assert m, done.stdout + done.stderr
    return float(m.group(1))


def _prom_age(url: str) -> float:
    """The agent's ``edge_agent_checkpoint_age_seconds`` gauge."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^edge_agent_checkpoint_age_seconds\{[^}]*\} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def _newest_written(state: Path) -> float:
    for path in sorted((p for p in state.iterdir() if _CKPT_RE.match(p.name)), reverse=True):
        try:
            return float(decode_checkpoint(path.read_bytes(), str(path))["written"])
        except (OSError, ValueError):  # removed beyond ``keep`` meanwhile
            continue
    raise AssertionError("no checkpoint")


def test_clock_jumps(agent_bundle: Path, workdir: Path, shim: Path) -> None:
    offset_file = workdir / "clock-offset"
    boot = -time.time() + 3600  # the board thinks it is 1970-01-01 01:00

    def shift(seconds: float) -> None:
        with open(offset_file, "r+b") as f:
            f.write(struct.pack("<q", int(seconds * 1e9)))

    offset_file.write_bytes(struct.pack("<q", int(boot * 1e9)))
    wd = Watchdog(workdir / "notify.sock")
    env = {
        "LD_PRELOAD": str(shim),
        "EA_CLOCK_OFFSET_FILE": str(offset_file),
        "NOTIFY_SOCKET": str(workdir / "notify.sock"),
        "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6)),
    }
    # Prometheus too, where prometheus_client is installed (its checkpoint age gauge)
    prom = importlib.util.find_spec("prometheus_client") is not None
    extra = '[metrics]\nhttp = true\nlisten = "127.0.0.1:0"\n' if prom else ""
    a = AgentProcess(write_config(workdir, agent_bundle, extra, checkpoint_s=CHECKPOINT_S), env)
    stop = threading.Event()
    feeder: threading.Thread | None = None
    try:
        a.wait_ready()
        assert wd.ready.wait(30)
        feeder = threading.Thread(
            target=_feed, args=(a.status()["endpoints"]["ingest"][0], stop), daemon=True
        )
        feeder.start()
        time.sleep(1.0)
        phases = [("1970", boot), ("now", 0.0), ("3 years back", -3 * YEAR_S), ("1970", boot)]
        for i, (name, offset) in enumerate(phases):
            if i:
                shift(offset)
                # the newest checkpoint was (almost always) written before the step
                st = a.status()
                assert 0 <= st["checkpoint"]["age_s"] < 5, st["checkpoint"]
                if prom:
                    assert 0 <= _prom_age(st["endpoints"]["metrics"][0]) < 5, name
            before, t0 = a.status(), time.monotonic()
            time.sleep(PHASE_S)
            st, elapsed = a.status(), time.monotonic() - t0
            ckpts = st["storage"]["checkpoints"] - before["storage"]["checkpoints"]
            where = f"{name}: {st}"
            # the interval held: neither a burst of checkpoints nor none
            assert elapsed / CHECKPOINT_S / 3 <= ckpts <= elapsed / CHECKPOINT_S * 2 + 2, where
            uptime = st["agent"]["uptime_s"] - before["agent"]["uptime_s"]
            assert 0.5 * PHASE_S <= uptime <= elapsed + 1.0, where
            assert RATE / 4 <= st["prediction_rate_per_s"] <= RATE * 4, where
            assert 0 <= st["checkpoint"]["age_s"] < 5, where
            assert 0 <= _cli_age(a.status_ep) < 10, where
            if prom:
                assert 0 <= _prom_age(st["endpoints"]["metrics"][0]) < 5, where
            # timestamps are what the wall clock says
            written = _newest_written(workdir / "state")
            assert abs(written - (time.time() + offset)) < 60, (name, written)
        stop.set()
        feeder.join(10)
        gaps = [b - a_ for a_, b in zip(wd.pings, wd.pings[1:], strict=False)]
        assert len(wd.pings) >= len(phases) * PHASE_S / (WATCHDOG_S / 2) - 2, wd.pings
        assert max(gaps) < WATCHDOG_S, gaps  # systemd would not have killed it
        rc, _ = a.terminate(30)
        assert rc == 0 and "Traceback" not in a.log(), a.log()
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(10)
        a.stop()
        wd.close()


def test_set_aside_never_replaces_earlier_evidence(tmp_path: Path) -> None:
    """Corrupt files are set aside under a wall-clock stamp, which repeats within a second
    and after the clock steps back: each copy must survive."""
    from edge_agent.service.state import StateStore

    store = StateStore(tmp_path)
    store.restore()
    for i in range(3):
        (tmp_path / "model.eab").write_bytes(b"damaged %d" % i)
        store.set_aside(tmp_path / "model.eab", "test")
    kept = sorted(p.read_bytes() for p in (tmp_path / "corrupt").iterdir())
    assert kept == [b"damaged 0", b"damaged 1", b"damaged 2"]
