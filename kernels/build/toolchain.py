"""What an ahead-of-time kernel build needs from the system, checked without numba.

Importing numba takes a while (minutes under emulation), so the checks that need only
the file system run first: a C compiler and the Python headers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path


class BuildError(RuntimeError):
    """The AOT module cannot be built here (the message says why)."""


def check() -> None:
    """Raise :class:`BuildError` saying what is missing for an AOT build, if anything."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = shlex.split(cc)[0]
    if shutil.which(compiler) is None:
        raise BuildError(f"no C compiler ({compiler!r} not found; apt install gcc)")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        raise BuildError(f"no Python headers (no Python.h in {include}; apt install python3-dev)")
