"""Helpers (no tests) for running the real agent as a subprocess on short ipc paths."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_agent.bundle import Bundle, LayerQuant, QuantModel
from edge_agent.bundle_io import save_bundle
from edge_agent.client import ClientError, StatusClient
from edge_agent.data import load_dataset
from kernels.plan.fixedpoint import quantize_multipliers
from kernels.plan.packing import pack_rows

REPO = Path(__file__).resolve().parents[1]


def short_dir() -> Path:
    """A fresh directory with a short path (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="ea-", dir="/tmp"))


def write_config(
    d: Path, bundle: Path, extra: str = "", ingest: str = "", checkpoint_s: float = 30.0
) -> Path:
    """An agent.toml using ipc endpoints inside ``d``."""
    ingest = ingest or f'endpoints = ["ipc://{d}/in.sock"]'
    text = f"""
[model]
bundle = "{bundle}"

[ingest]
{ingest}

[output]
endpoints = ["ipc://{d}/out.sock"]

[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
checkpoint_interval_s = {checkpoint_s}

{extra}
"""
    path = d / "agent.toml"
    path.write_text(text)
    return path


def serial_config(d: Path, bundle: Path, port: str, framing: str, extra: str = "") -> Path:
    """An agent.toml reading one serial port (no ZeroMQ ingest), reconnecting every 0.2 s."""
    serial = f"""
[serial]
enabled = true
port = "{port}"
framing = "{framing}"
sensor = "uart"
reconnect_s = 0.2
"""
    return write_config(d, bundle, ingest="endpoints = []", extra=serial + extra)


class AgentProcess:
    """``python -m edge_agent.service`` in a subprocess, stderr captured to a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.dir = config.parent
        self.log_path = self.dir / f"agent-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.service", "--config", str(config)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.status_ep = f"ipc://{self.dir}/run/status.sock"

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the status socket answers; return the ``ping`` result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.request("ping", timeout=1.0)
            except ClientError:
                time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout} s:\n{self.log()}")

    def request(self, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
        """One status-socket request."""
        with StatusClient(self.status_ep, timeout) as c:
            return c.request(cmd)

    def status(self) -> dict[str, Any]:
        """The ``status`` reply."""
        return self.request("status")

    def wait_for(self, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``status`` until ``pred(status)`` holds."""
        deadline = time.monotonic() + timeout
        st = self.status()
        while not pred(st):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met; last status: {st}")
            time.sleep(0.05)
            st = self.status()
        return st

    def log(self) -> str:
        """The agent's log so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit status, seconds taken)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def subscribe(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """A SUB socket on the agent's prediction output."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"pred/")
    sock.setsockopt(zmq.RCVHWM, 1_000_000)
    sock.connect(endpoint)
    return sock


def cleanup(d: Path) -> None:
    """Remove a short_dir."""
    shutil.rmtree(d, ignore_errors=True)


def make_bundle(path: Path, seed: int = 0) -> Path:
    """Write a real, valid BasicMotions-shaped bundle built with numpy alone (random
    weights in the shape of the default sensor CNN), so service tests need no training."""
    rng = np.random.default_rng(seed)
    ds = load_dataset("basicmotions")
    mean, std = ds.normalization()
    layers: list[dict[str, Any]] = [
        {
            "op": "conv1d",
            "in_ch": 6,
            "out_ch": 32,
            "kernel": 5,
            "stride": 1,
            "padding": 2,
            "relu": True,
        },
        {"op": "maxpool1d", "kernel": 2, "stride": 2},
        {
            "op": "conv1d",
            "in_ch": 32,
            "out_ch": 64,
            "kernel": 5,
            "stride": 1,
            "padding": 2,
            "relu": True,
        },
        {"op": "maxpool1d", "kernel": 2, "stride": 2},
        {"op": "gap"},
        {"op": "linear", "in_features": 64, "out_features": 4, "relu": False},
    ]
    in_scale, in_zp, act_scale, t = 8.0 / 255, 128, 0.05, 100
    fp: list[tuple[np.ndarray, np.ndarray]] = []
    quant: list[LayerQuant] = []
    for op in layers:
        if op["op"] == "maxpool1d":
            t //= 2
            continue
        if op["op"] == "gap":
            in_scale, in_zp = in_scale / t, 0  # centred sums of t positions
            continue
        if op["op"] == "conv1d":
            shape = (op["out_ch"], op["in_ch"], op["kernel"])
        else:
            shape = (op["out_features"], op["in_features"])
        w = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        b = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
        fp.append((w, b))
        w_scale = (np.abs(w).reshape(shape[0], -1).max(axis=1) / 7).astype(np.float32)
        q = np.clip(np.rint(w.reshape(shape[0], -1) / w_scale[:, None]), -8, 7).astype(np.int8)
        bias_q = np.rint(b / (w_scale * in_scale)).astype(np.int32)
        last = op["op"] == "linear"
        m0, shift = (
            quantize_multipliers(w_scale * in_scale / act_scale) if not last else (None, None)
        )
        quant.append(
            LayerQuant(
                bits=4,
                k=q.shape[1],
                packed=pack_rows(q, 4),
                w_scale=w_scale,
                bias_q=bias_q,
                in_scale=in_scale,
                in_zp=in_zp,
                out_scale=None if last else act_scale,
                out_zp=None if last else 0,
                m0=m0,
                shift=shift,
                out_mult=(w_scale * in_scale).astype(np.float32) if last else None,
            )
        )
        in_scale, in_zp = act_scale, 0
    bundle = Bundle(
        arch={
            "name": "service_test_cnn",
            "input_shape": [6, 100],
            "num_classes": 4,
            "layers": layers,
        },
        fp_weights=fp,
        label_names=list(ds.label_names),
        norm_mean=mean,
        norm_std=std,
        quant={4: QuantModel(4, 8, 8.0 / 255, 128, quant)},
        default_bits=4,
        meta={"dataset": "basicmotions", "note": "random weights for service tests"},
    )
    save_bundle(bundle, path)
    return path


def changed_bundle(bundle: Bundle, change: str) -> Bundle:
    """``bias``: the last layer's integer bias +1 (a new version, nearly the same answers);
    ``roll``: its output rows rolled by one (class c answers as c+1: a bad model)."""
    q = bundle.quant[bundle.default_bits]
    last = q.layers[-1]
    if change == "bias":
        last = dataclasses.replace(last, bias_q=last.bias_q + 1)
    else:
        rows = last.packed.shape[0]
        order = np.roll(np.arange(rows), 1)
        last = dataclasses.replace(
            last,
            packed=last.packed[order],
            bias_q=last.bias_q[order],
            w_scale=last.w_scale[order],
            out_mult=None if last.out_mult is None else last.out_mult[order],
        )
    layers = [*q.layers[:-1], last]
    return dataclasses.replace(
        bundle, quant={bundle.default_bits: dataclasses.replace(q, layers=layers)}
    )
