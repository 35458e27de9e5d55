"""scripts/test.sh installs what the suite needs on a fresh machine, Node.js included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "system-packages.sh"


def _missing(path: str) -> list[str]:
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPT), sys.executable],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_a_machine_without_node_gets_nodejs_and_npm(tmp_path: Path) -> None:
    missing = _missing(str(tmp_path))  # an empty PATH: nothing installed
    assert {"nodejs", "npm", "systemd", "gcc"} <= set(missing), missing


def test_nothing_is_asked_for_what_is_there(tmp_path: Path) -> None:
    for tool in ("node", "npm", "systemd-analyze"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    missing = _missing(str(tmp_path))
    assert not {"nodejs", "npm", "systemd"} & set(missing), missing


def test_test_sh_installs_what_the_script_names() -> None:
    text = (REPO / "scripts" / "test.sh").read_text()
    assert "scripts/system-packages.sh" in text and "apt-get install" in text
