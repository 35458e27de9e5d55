"""The systemd unit (systemd-analyze verify + security) and deploy/install.sh."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.service.config import AgentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _unit_for_this_checkout(tmp_path: Path) -> Path:
    """The unit with /opt/edge-agent/venv mapped to this checkout's venv, so that
    verify can check that ExecStart= names an existing executable."""
    venv = Path(sys.executable).parent.parent
    path = tmp_path / "edge-agent.service"
    path.write_text(UNIT.read_text().replace("/opt/edge-agent/venv", str(venv)))
    return path


def test_unit_passes_verify(tmp_path: Path) -> None:
    r = subprocess.run(
        [ANALYZE, "verify", str(_unit_for_this_checkout(tmp_path))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "edge-agent" not in r.stderr, r.stderr


def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            "--no-pager",
            str(_unit_for_this_checkout(tmp_path)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_keeps_what_the_agent_needs() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "DynamicUser=yes" in text
    assert not re.search(r"^MemoryDenyWriteExecute=", text, re.M), "numba JIT needs W+X pages"
    families = re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M)
    assert families and {"AF_UNIX", "AF_INET"} <= set(families.group(1).split())
    assert "RestartPreventExitStatus=78" in text  # matches main.EX_CONFIG


def test_unit_allows_what_libzmq_and_the_burst_child_call() -> None:
    """libzmq aborts when getifaddrs() (netlink) or pthread_setschedparam() is refused, and
    the burst child lowers its priority; tests/systemd/run.sh proves it under real systemd."""
    text = UNIT.read_text()
    families = re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M)
    assert families and "AF_NETLINK" in families.group(1).split()
    filters = re.findall(r"^SystemCallFilter=(.*)$", text, re.M)
    denied = [i for i, f in enumerate(filters) if f.startswith("~") and "@resources" in f]
    allowed_after = {
        c for f in filters[denied[-1] + 1 :] if not f.startswith("~") for c in f.split()
    }
    assert {"sched_setscheduler", "setpriority"} <= allowed_after, filters


def test_default_config_template_matches_the_defaults() -> None:
    """The installed configuration is the defaults, but for real-time threads: the unit
    grants them (LimitRTPRIO=1), an agent run by hand would only be refused."""
    defaults = AgentConfig()
    installed = dataclasses.replace(
        defaults, inference=dataclasses.replace(defaults.inference, realtime_priority=1)
    )
    assert load_config(REPO / "deploy" / "agent.toml") == installed


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_script_offline_root_is_idempotent_and_uninstalls(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    script = REPO / "deploy" / "install.sh"

    def run(*args: str) -> str:
        r = subprocess.run(
            ["bash", str(script), "--root", str(root), "--no-venv", *args],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    first = run()
    assert (
        "kernels: AOT build unavailable (no /opt/edge-agent/venv/bin/edge-agent); "
        "the agent will JIT-compile"
    ) in first
    cfg = root / "etc/edge-agent/agent.toml"
    cfg.write_text(cfg.read_text() + "\n# local edit\n")
    assert "keeping existing" in run()
    assert cfg.read_text().endswith("# local edit\n")
    assert (root / "etc/systemd/system/edge-agent.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/edge-agent.service").exists() or (
        root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    ).is_symlink()
    assert (root / "etc/edge-agent/model.eab").stat().st_size > 0
    run("--uninstall")
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert cfg.exists(), "uninstall keeps the configuration"
    run("--uninstall", "--purge")
    assert not (root / "etc/edge-agent").exists()
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_script_survives_a_failed_kernel_build(tmp_path: Path) -> None:
    """The AOT kernel build fails in this root (no ``env`` to run it, let alone a compiler):
    the install says so in one line and succeeds; the agent will JIT-compile."""
    root = tmp_path / "root"
    exe = root / "opt/edge-agent/venv/bin/edge-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)
    r = subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--root", str(root), "--no-venv"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if "AOT build unavailable" in line]
    assert len(notes) == 1 and notes[0].endswith("; the agent will JIT-compile"), r.stdout
    assert (root / "etc/systemd/system/edge-agent.service").exists()
