"""Processes of the fleet benchmark: agents, the proxy, a real Prometheus server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.client import ClientError, StatusClient  # noqa: E402


def status(ep: str, cmd: str = "status", timeout: float = 10.0) -> dict[str, Any]:
    """One status-socket request."""
    with StatusClient(ep, timeout) as c:
        return c.request(cmd)


def compile_aot(cache: Path) -> None:
    """Build the AOT kernels into ``cache`` (what ``deploy/install.sh`` does on a board)."""
    env = {**os.environ, "EDGE_AGENT_JIT_CACHE": str(cache)}
    subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "compile-kernels"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )


class Fleet:
    """N agent subprocesses, each with its own state dir, board identity and metrics port,
    subscribed to ``board-XX/`` at the proxy's backend."""

    def __init__(
        self, work: Path, n: int, bundle: Path, backend: str, port0: int, cache: Path
    ) -> None:
        self.boards = [f"board-{i:02d}" for i in range(n)]
        self.dirs = [work / b for b in self.boards]
        self.ports = [port0 + i for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "EDGE_AGENT_KERNELS": "aot", "EDGE_AGENT_JIT_CACHE": str(cache)}
        for b, d, port in zip(self.boards, self.dirs, self.ports, strict=True):
            d.mkdir(parents=True)
            shutil.copyfile(bundle, d / "model.eab")
            (d / "agent.toml").write_text(f"""
[model]
bundle = "{d}/model.eab"
[ingest]
mode = "connect"
endpoints = ["{backend}"]
topics = ["{b}/"]
rcvhwm = 100000
queue_capacity = 4096
[output]
endpoints = ["ipc://{d}/out.sock"]
[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
checkpoint_interval_s = 60.0
[calibration]
enabled = false
[metrics]
http = true
listen = "127.0.0.1:{port}"
board = "{b}"
[log]
level = "warning"
""")

    def status_ep(self, i: int) -> str:
        """Agent ``i``'s status socket."""
        return f"ipc://{self.dirs[i]}/run/status.sock"

    def start(self, wave: int = 10, timeout_s: float = 600.0) -> None:
        """Start the agents ``wave`` at a time (2 cores: all at once only thrash)."""
        for k in range(0, len(self.dirs), wave):
            for d in self.dirs[k : k + wave]:
                with open(d / "agent.log", "wb") as log:
                    self.procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "edge_agent.service",
                                "--config",
                                str(d / "agent.toml"),
                            ],
                            cwd=REPO,
                            stderr=log,
                            env=self.env,
                        )
                    )
            for i in range(k, min(k + wave, len(self.dirs))):
                self._wait_ready(i, timeout_s)

    def _wait_ready(self, i: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.procs[i].poll() is not None:
                raise RuntimeError(
                    f"{self.boards[i]} exited: {(self.dirs[i] / 'agent.log').read_text()[-2000:]}"
                )
            try:
                status(self.status_ep(i), "ping", 1.0)
                return
            except ClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def statuses(self) -> list[dict[str, Any]]:
        """Every agent's status."""
        return [status(self.status_ep(i)) for i in range(len(self.procs))]

    def peak_rss_mb(self) -> list[float]:
        """VmHWM of every agent process, MiB."""
        out = []
        for p in self.procs:
            text = Path(f"/proc/{p.pid}/status").read_text()
            kb = next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmHWM"))
            out.append(kb / 1024)
        return out

    def stop(self) -> None:
        """SIGTERM every agent, then make sure they are gone."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


class ProxyProc:
    """``edge-agent proxy`` with /metrics."""

    def __init__(self, work: Path, port: int) -> None:
        self.front, self.back = f"ipc://{work}/front.sock", f"ipc://{work}/back.sock"
        self.port = port
        with open(work / "proxy.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent.fleet.proxy_main",
                    "--frontend",
                    self.front,
                    "--backend",
                    self.back,
                    "--metrics",
                    f"127.0.0.1:{port}",
                    "--board",
                    "gateway",
                ],
                cwd=REPO,
                stderr=log,
            )
        self.ps = psutil.Process(self.proc.pid)

    def messages(self) -> dict[str, float]:
        """The proxy's message counters, from its /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        out = {}
        for line in text.splitlines():
            if line.startswith("edge_agent_proxy_messages_total{"):
                labels, value = line.rsplit(" ", 1)
                key = ("backend" if 'socket="backend"' in labels else "frontend") + (
                    "/out" if 'direction="out"' in labels else "/in"
                )
                out[key] = float(value)
        return out

    def cpu_s(self) -> float:
        """User + system CPU seconds of the proxy process."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


class Prometheus:
    """Debian's ``prometheus`` binary with a generated scrape config on loopback."""

    def __init__(
        self,
        work: Path,
        port: int,
        targets: list[tuple[str, int]],
        proxy_port: int,
        interval_s: float = 2.0,
    ) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("the prometheus binary is missing: apt-get install prometheus")
        self.url = f"http://127.0.0.1:{port}"
        every = f"{round(interval_s * 1000)}ms"  # Prometheus durations take no fractions
        jobs = [
            {
                "job_name": "edge-agent",
                "scrape_interval": every,
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for _, p in targets]}],
            },
            {
                "job_name": "edge-agent-proxy",
                "scrape_interval": every,
                "static_configs": [{"targets": [f"127.0.0.1:{proxy_port}"]}],
            },
        ]
        cfg = work / "prometheus.yml"
        cfg.write_text(
            json.dumps({"global": {"scrape_interval": every}, "scrape_configs": jobs})
        )  # JSON is YAML
        with open(work / "prometheus.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stderr=log,
                stdout=log,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prometheus did not start: {(work / 'prometheus.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` field."""
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def scalar(self, query: str) -> float:
        """A query whose answer is one number (0 when empty)."""
        res = self.api("query", query=query)["result"]
        return float(res[0]["value"][1]) if res else 0.0

    def targets_up(self, job: str = "edge-agent") -> int:
        """Active targets of ``job`` whose last scrape succeeded."""
        active = self.api("targets", state="active")["activeTargets"]
        return sum(1 for t in active if t["labels"]["job"] == job and t["health"] == "up")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
