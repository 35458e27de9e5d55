"""Serial ingest into a real agent: a pty pair (line framing) and a socket:// device that
disappears and comes back (frame framing, reconnect)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
from test_service_support import AgentProcess, serial_config

from edge_agent.data import load_dataset
from edge_agent.ingest.protocol import encode_sample
from edge_agent.ingest.serial_source import format_line, frame


def test_pty_line_framing(agent_bundle: Path, workdir: Path) -> None:
    master, slave = os.openpty()
    a = AgentProcess(serial_config(workdir, agent_bundle, os.ttyname(slave), "line"))
    try:
        a.wait_ready()
        ds = load_dataset("basicmotions")
        time.sleep(0.5)  # the agent opens the port right after start-up
        lines = [format_line(ds.X_test[i], int(ds.y_test[i]) if i % 2 else None) for i in range(20)]
        junk = [
            b"# boot banner from the sensor\n",
            b"\n",
            b"1,2,oops\n",
            b"1,2,3\n",
            format_line(ds.X_test[0], 9),
            b"nan," * 599 + b"nan\n",
        ]
        for chunk in lines[:10] + junk + lines[10:]:
            os.write(master, chunk)
            time.sleep(0.005)
        st = a.wait_for(
            lambda s: s["samples"]["predicted"] >= 20 and s["samples"]["rejected_total"] >= 4
        )
        s = st["samples"]
        assert s["accepted"] == 20 and s["accepted_labelled"] == 10
        assert s["rejected"] == {"serial": 1, "shape": 1, "label": 1, "nonfinite": 1}
    finally:
        a.stop()
        os.close(master)
        os.close(slave)


def test_frames_over_a_device_that_disappears(agent_bundle: Path, workdir: Path) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    a = AgentProcess(serial_config(workdir, agent_bundle, f"socket://127.0.0.1:{port}", "frame"))
    ds = load_dataset("basicmotions")
    try:
        a.wait_ready()
        seq = 0
        for round_ in range(2):
            srv.settimeout(10)
            conn, _ = srv.accept()
            # pyserial's socket:// open() drains what already arrived: send after it is done
            deadline = time.monotonic() + 30
            while a.log().count(" open at ") <= round_ and time.monotonic() < deadline:
                time.sleep(0.05)
            payload = b"\x00\xea" + frame(b"not msgpack") + b"garbage"
            bad = bytearray(frame(encode_sample("u", 999, ds.X_test[0], 1.0)))
            bad[-1] ^= 0xFF  # CRC mismatch
            payload += bytes(bad)
            for _ in range(10):
                payload += frame(encode_sample("u", seq, ds.X_test[seq % 40], 1.0))
                seq += 1
            for i in range(0, len(payload), 700):  # arrives in pieces
                conn.sendall(payload[i : i + 700])
                time.sleep(0.002)
            a.wait_for(lambda s, n=seq: s["samples"]["predicted"] >= n)
            conn.close()  # the device goes away; the agent reconnects
            if round_ == 0:
                time.sleep(0.5)
        st = a.status()
        s = st["samples"]
        assert s["accepted"] == 20 and s["predicted"] == 20
        assert s["rejected"] == {"msgpack": 2, "serial": 2}
        assert "reconnecting" in a.log() or "lost" in a.log()
        assert np.isfinite(st["latency_ms"]["p99"])
    finally:
        a.stop()
        srv.close()
