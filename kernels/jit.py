"""The decorator every numba kernel uses; importing it fixes the ISA and the cache directory.

Set ``EDGE_AGENT_JIT_CACHE`` before the first import of a kernel module to place the
on-disk cache elsewhere (see :mod:`kernels.jitcache`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

from kernels import jitcache
from kernels.isa import ACTIVE_ISA

F = TypeVar("F", bound=Callable[..., Any])

CACHE_DIR = jitcache.configure(ACTIVE_ISA)


def kernel(fn: F) -> F:
    """``numba.njit(cache=True, nogil=True)``: compiled once, cached on disk, GIL released."""
    return numba.njit(cache=True, nogil=True)(fn)  # type: ignore[return-value]
