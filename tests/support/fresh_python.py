"""Run a snippet in a fresh interpreter (what a module imports, process-wide clocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fresh_python(code: str, timeout: float = 120.0) -> str:
    """stdout of ``code`` run by a new Python with only this checkout on its path."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
