"""The decorator every numba kernel uses; importing it fixes the ISA and the cache directory.

Set ``EDGE_AGENT_JIT_CACHE`` before the first import of a kernel module to place the
on-disk cache elsewhere (see :mod:`kernels.codegen.jitcache`). numba checks only the timestamp of
the file that defines a cached function, not of the kernels it calls from other modules,
so the cache subdirectory is named after a hash of every kernel source file: editing or
upgrading any of them starts a fresh cache instead of loading stale machine code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

from kernels.build.cachepaths import sources_digest
from kernels.codegen import jitcache
from kernels.codegen.isa import ACTIVE_ISA

F = TypeVar("F", bound=Callable[..., Any])


CACHE_DIR = jitcache.configure(f"{ACTIVE_ISA}/{sources_digest()}")


def kernel(fn: F) -> F:
    """``numba.njit(cache=True, nogil=True)``: compiled once, cached on disk, GIL released."""
    return numba.njit(cache=True, nogil=True)(fn)  # type: ignore[return-value]


def inline_kernel(fn: F) -> F:
    """``numba.njit(inline="always")``: inlined into its callers in numba IR (for small
    helpers called in hot loops, where LLVM would keep a call with many stack arguments)."""
    return numba.njit(inline="always")(fn)  # type: ignore[return-value]
