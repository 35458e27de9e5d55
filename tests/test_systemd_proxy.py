"""The proxy's systemd unit: systemd-analyze verify and security, and what it must keep."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-agent-proxy.service"
AGENT_UNIT = REPO / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (systemd)")


def _unit_here(tmp_path: Path) -> Path:
    """The unit with /opt/edge-agent/venv mapped to this checkout's venv (verify checks
    that ExecStart= names an existing executable)."""
    venv = Path(sys.executable).parent.parent
    path = tmp_path / UNIT.name
    path.write_text(UNIT.read_text().replace("/opt/edge-agent/venv", str(venv)))
    return path


@needs_analyze
def test_proxy_unit_passes_verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    r = subprocess.run(
        [ANALYZE, "verify", str(_unit_here(tmp_path))], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and "edge-agent" not in r.stderr, r.stderr


@needs_analyze
def test_proxy_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    assert ANALYZE is not None
    r = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def _setting(text: str, key: str) -> set[str]:
    return {w for line in re.findall(rf"^{key}=(.*)$", text, re.M) for w in line.split()}


def test_proxy_unit_keeps_what_libzmq_needs() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "DynamicUser=yes" in text
    assert "RestartPreventExitStatus=78" in text  # matches proxy_main.EX_CONFIG
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= _setting(
        text, "RestrictAddressFamilies"
    )
    assert "edge-agent proxy" in text


def test_proxy_unit_is_at_least_as_hardened_as_the_agent() -> None:
    """Every hardening line of the agent's unit (but the agent's own directories and
    resource numbers) is in the proxy's unit too."""
    skip = (
        "Description",
        "Documentation",
        "ExecStart",
        "ExecReload",
        "StateDirectory",
        "CacheDirectory",
        "ConfigurationDirectory",
        "RuntimeDirectory",
        "Nice",
        "CPUWeight",
        "IOWeight",
        "Memory",
        "TasksMax",
        "LimitNOFILE",
        "Timeout",
        "RestrictAddressFamilies",
        "SystemCallFilter",
        "StateDirectoryMode",
        "CacheDirectoryMode",
        "Environment=OPENBLAS",  # the proxy does no numpy work
        "RestrictRealtime",  # the agent's real-time grant; the proxy refuses it (below)
        "LimitRTPRIO",
    )
    proxy = set(UNIT.read_text().splitlines())
    missing = [
        line
        for line in AGENT_UNIT.read_text().splitlines()
        if "=" in line
        and not line.startswith("#")
        and not line.startswith(skip)
        and line not in proxy
    ]
    assert not missing, missing
    assert "RestrictRealtime=yes" in proxy
    agent_filters = re.findall(r"^SystemCallFilter=(.*)$", AGENT_UNIT.read_text(), re.M)
    proxy_filters = re.findall(r"^SystemCallFilter=(.*)$", UNIT.read_text(), re.M)
    # the same groups and deny list; what comes back from the deny list is no more than
    # what the agent gets back
    assert proxy_filters[:2] == agent_filters[:2]
    assert set(" ".join(proxy_filters[2:]).split()) <= set(" ".join(agent_filters[2:]).split())
