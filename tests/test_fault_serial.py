"""A serial sensor unplugged and plugged in again, twice, under a running agent.

A pty stands in for a USB serial adapter: the agent opens it through a symlink (as udev's
``/dev/serial/by-id/...``); unplugging closes the pty and removes the link, plugging in
opens a new pty and links it. A ``socket://`` device's peer goes away (connection
refused) and comes back on the same port. The agent must reconnect, count disconnects
and reconnects in ``status``, predict what arrives after each replug, and not spin while
the device is gone (its CPU time over that period is measured)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.faults import cpu_seconds
from test_service_support import (
    REPO,
    AgentProcess,
    serial_config,
)

from edge_agent.data import load_dataset
from edge_agent.ingest.protocol import encode_sample
from edge_agent.ingest.serial_source import format_line, frame

UNPLUGGED_S = 3.0
MAX_CPU_FRACTION = 0.05  # of one core, over the unplugged period


def _config(d: Path, bundle: Path, port: str, framing: str) -> Path:
    # calibration off: its rounds would blur the CPU time measured while unplugged
    return serial_config(d, bundle, port, framing, extra="[calibration]\nenabled = false\n")


def _idle_cpu(a: AgentProcess) -> float:
    """The agent's CPU use (fraction of one core) while the device stays away."""
    c0, t0 = cpu_seconds(a.proc.pid), time.monotonic()
    time.sleep(UNPLUGGED_S)
    return (cpu_seconds(a.proc.pid) - c0) / (time.monotonic() - t0)


def _serial(a: AgentProcess, **want: Any) -> dict[str, Any]:
    return a.wait_for(lambda s: all(s["serial"][k] == v for k, v in want.items()), timeout=30)[
        "serial"
    ]


class Pty:
    """A pty reached through a symlink, like a USB adapter under /dev/serial/by-id."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tmp = self.link.with_suffix(".new")
        tmp.symlink_to(os.ttyname(self.slave))
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)
        os.close(self.slave)


def test_pty_unplugged_and_replugged(agent_bundle: Path, workdir: Path) -> None:
    ds = load_dataset("basicmotions")
    dev = Pty(workdir / "ttyUSB0")
    dev.plug()
    a = AgentProcess(_config(workdir, agent_bundle, str(dev.link), "line"))
    cpu = []
    try:
        a.wait_ready()
        sent = 0
        for round_ in range(3):
            _serial(a, connected=True, reconnects=round_)
            for i in range(20):
                os.write(dev.master, format_line(ds.X_test[i], int(ds.y_test[i])))
                time.sleep(0.003)
            sent += 20
            a.wait_for(lambda s, n=sent: s["samples"]["predicted"] >= n)
            if round_ == 2:
                break
            dev.unplug()
            _serial(a, connected=False, disconnects=round_ + 1)
            cpu.append(_idle_cpu(a))
            dev.plug()
        st = a.status()
        assert st["samples"]["accepted"] == st["samples"]["predicted"] == 60
        assert st["serial"]["disconnects"] == 2 and st["serial"]["reconnects"] == 2
        assert st["serial"]["open_failures"] >= 2  # it kept trying while unplugged
        cli = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "status", "--endpoint", a.status_ep],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert f"{dev.link} connected, 2 disconnects, 2 reconnects" in cli.stdout, cli.stdout
        print(f"CPU while unplugged (fraction of one core): {cpu}")
        assert max(cpu) < MAX_CPU_FRACTION, cpu
        rc, _ = a.terminate(30)
        assert rc == 0 and "Traceback" not in a.log(), a.log()
    finally:
        a.stop()
        if dev.link.is_symlink():
            dev.unplug()


def test_socket_peer_gone_and_back(agent_bundle: Path, workdir: Path) -> None:
    ds = load_dataset("basicmotions")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    a = AgentProcess(_config(workdir, agent_bundle, f"socket://127.0.0.1:{port}", "frame"))
    cpu = []
    try:
        a.wait_ready()
        seq = 0
        for round_ in range(2):
            srv.settimeout(30)
            conn, _ = srv.accept()
            _serial(a, connected=True, reconnects=round_)
            time.sleep(0.3)  # pyserial's socket:// open() drains what arrived first
            for _ in range(15):
                conn.sendall(frame(encode_sample("u", seq, ds.X_test[seq % 40], 1.0)))
                seq += 1
            a.wait_for(lambda s, n=seq: s["samples"]["predicted"] >= n)
            conn.close()
            if round_ == 0:  # the peer goes away altogether: connections are refused
                srv.close()
                _serial(a, connected=False, disconnects=1)
                cpu.append(_idle_cpu(a))
                srv = socket.create_server(("127.0.0.1", port))
        st = a.status()
        assert st["samples"]["accepted"] == st["samples"]["predicted"] == 30
        assert st["serial"]["reconnects"] == 1 and st["serial"]["disconnects"] >= 1
        print(f"CPU while unplugged (fraction of one core): {cpu}")
        assert max(cpu) < MAX_CPU_FRACTION, cpu
        rc, _ = a.terminate(30)
        assert rc == 0 and "Traceback" not in a.log(), a.log()
    finally:
        a.stop()
        srv.close()
