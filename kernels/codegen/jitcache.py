"""Where numba keeps compiled kernels on disk.

The directory must be chosen before any kernel module is imported (numba fixes a
function's cache location when the function is decorated). The root is resolved by
:func:`kernels.build.cachepaths.cache_root`; a subdirectory per instruction set keeps caches
built for different kernel variants apart, so a read-only install under ``/usr`` never
needs a writable ``__pycache__``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numba

from kernels.build.cachepaths import cache_root

log = logging.getLogger(__name__)


def configure(isa: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Point numba's on-disk cache at ``root/isa`` (created if missing) and return it.

    The root is exported as ``EDGE_AGENT_JIT_CACHE`` so that child processes share it.
    An unusable directory is logged and left to numba's own fallback locations.
    """
    base = Path(root) if root is not None else cache_root()
    path = base / isa
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as exc:  # caching is an optimization, never a reason to fail
        log.warning("JIT cache directory %s is not usable (%s); using numba's default", path, exc)
        return path
    numba.config.CACHE_DIR = str(path)  # type: ignore[attr-defined]
    os.environ["EDGE_AGENT_JIT_CACHE"] = str(base)
    log.debug("numba cache directory: %s", path)
    return path
