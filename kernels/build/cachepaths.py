"""Where compiled kernels live and what identifies a build of them (numba-free).

Both kinds of compiled kernels live under one cache root, resolved in this order:

1. ``EDGE_AGENT_JIT_CACHE`` or ``NUMBA_CACHE_DIR`` from the environment,
2. ``$CACHE_DIRECTORY/numba`` (set by systemd for ``CacheDirectory=``),
3. ``$XDG_CACHE_HOME/edge-agent/numba`` or ``~/.cache/edge-agent/numba``.

numba's JIT cache is ``ROOT/<isa>/<sources digest>/`` (:mod:`kernels.codegen.jitcache`), the
ahead-of-time compiled modules are in ``ROOT/aot/`` (:mod:`kernels.build.aot`). An AOT module's
name holds its instruction set and a key over everything its machine code depends on: the
kernel sources, numba, numpy, Python, the machine and its CPU features. The features are
numpy's run-time detection, which needs neither numba nor ``/proc/cpuinfo`` (hidden from
the service by ``ProcSubset=pid``). A module built for anything else has another name
and is never loaded. Beside each module, a manifest (JSON) records its instruction set
and SHA-256, so that a truncated or altered file is not loaded either.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
from pathlib import Path

import numpy as np

from kernels.digest import file_sha256 as file_sha256
from kernels.digest import sha256

AOT_PREFIX = "edge_kernels_"
EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def cache_root() -> Path:
    """The cache root from the environment (see the module docstring)."""
    for var in ("EDGE_AGENT_JIT_CACHE", "NUMBA_CACHE_DIR"):
        value = os.environ.get(var)
        if value:
            return Path(value)
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:  # may hold several ':'-separated directories; the first is ours
        return Path(systemd.split(":")[0]) / "numba"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "edge-agent" / "numba"


def aot_dir(root: Path | None = None) -> Path:
    """Directory of the ahead-of-time compiled modules (under ``root`` or the cache root)."""
    return (cache_root() if root is None else root) / "aot"


@functools.cache
def sources_digest() -> str:
    """Hash of every kernel source file: editing or upgrading any of them changes it."""
    h = sha256()
    root = Path(__file__).parent.parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _cpu_features() -> list[str]:
    """CPU features numpy detected at run time (x86 ``cpuid``, AArch64 ``AT_HWCAP``)."""
    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # numpy < 2
        umath = importlib.import_module("numpy.core._multiarray_umath")
    return sorted(name for name, present in umath.__cpu_features__.items() if present)


def _dist_version(name: str) -> str:
    """Installed version of a distribution, read from its ``.dist-info`` directory name.

    ``importlib.metadata`` would give the same string but imports email, zipfile, csv and
    more: 3 MB of the engine-only process's peak RSS, on the path that loads AOT kernels.
    It remains the fallback for installs without a ``.dist-info`` beside the package.
    """
    spec = importlib.util.find_spec(name)
    if spec is None:
        return "none"
    for location in spec.submodule_search_locations or []:
        found = sorted(Path(location).parent.glob(f"{name}-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len(name) + 1 : -len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def _build_key() -> str:
    parts = [
        sources_digest(),
        _dist_version("numba"),
        np.__version__,
        sys.implementation.cache_tag,
        EXTENSION_SUFFIX,
        platform.machine(),
        ",".join(_cpu_features()),
        os.environ.get("NUMBA_CPU_NAME", ""),
        os.environ.get("NUMBA_CPU_FEATURES", ""),
    ]
    return "\0".join(parts)


def module_name(isa: str) -> str:
    """Name of the AOT module of ``isa`` for these kernel sources, this software and CPU."""
    key = sha256(f"{isa}\0{_build_key()}".encode()).hexdigest()[:16]
    return f"{AOT_PREFIX}{isa.replace('-', '_')}_{key}"


def module_file(isa: str, directory: Path) -> Path:
    """Path of the AOT module of ``isa`` in ``directory``."""
    return directory / (module_name(isa) + EXTENSION_SUFFIX)


def manifest_file(isa: str, directory: Path) -> Path:
    """Path of the manifest of the AOT module of ``isa`` in ``directory``."""
    return directory / (module_name(isa) + ".json")
