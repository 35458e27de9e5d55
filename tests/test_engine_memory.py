"""The engine-only process stays small: loading AOT kernels imports no package metadata."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from kernels.build import cachepaths

REPO = Path(__file__).resolve().parents[1]


def test_dist_version_reads_what_importlib_metadata_reads() -> None:
    assert cachepaths._dist_version("numba") == metadata.version("numba")
    assert cachepaths._dist_version("numpy") == metadata.version("numpy")
    assert cachepaths._dist_version("no_such_package_here") == "none"


def test_naming_the_aot_module_imports_no_package_metadata() -> None:
    # importlib.metadata pulls in email, zipfile, csv...: 3 MB of peak RSS in the agent
    code = (
        "import sys\n"
        "from kernels.build import cachepaths\n"
        "from kernels.exec import backend\n"
        "cachepaths.module_name('generic')\n"
        "heavy = {'importlib.metadata', 'email', 'zipfile', 'numba'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "[]"
