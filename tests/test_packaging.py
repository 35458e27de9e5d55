"""The project metadata builds without deprecation warnings (a fresh install shows none)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in meta["build-system"]["requires"]  # SPDX strings need 77


def test_metadata_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for pkg in ("edge_agent", "kernels"):  # enough for package discovery
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "meta").mkdir()
    code = "from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel('meta')"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = next((tmp_path / "meta").glob("*.dist-info"))
    text = (info / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in text, text[:1000]
