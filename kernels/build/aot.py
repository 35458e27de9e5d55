"""Ahead-of-time compilation of the kernels the engine calls, with numba's pycc.

:func:`build` compiles :func:`kernels.codegen.runner.run_program` (with every kernel it calls) for
this CPU into a Python extension module named by :func:`kernels.build.cachepaths.module_name`,
for the instruction set the JIT would use here (:mod:`kernels.codegen.isa`). The engine loads it
without numba (:mod:`kernels.exec.backend`). Building needs a C compiler and the Python headers
(``apt install gcc python3-dev``) and ``numba.pycc`` (deprecated by numba; pyproject bounds
numba to versions that have it). Without them :class:`BuildError` says why and the engine
keeps using the JIT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba

from kernels.plan import abi
from kernels.build import cachepaths, toolchain
from kernels.codegen.isa import ACTIVE_ISA, target_cpu
from kernels.codegen.runner import run_program
from kernels.plan.targets import ISAS
from kernels.build.toolchain import BuildError

log = logging.getLogger(__name__)


def build(dest_dir: Path | None = None) -> Path:
    """Compile the kernels into ``dest_dir`` (default the cache's ``aot/``); its path.

    The module and its manifest appear atomically (written aside, then renamed); modules
    left from other kernel sources, software or CPUs are removed.
    """
    dest = cachepaths.aot_dir() if dest_dir is None else Path(dest_dir)
    toolchain.check()
    cc_class = _pycc()
    target = cachepaths.module_file(ACTIVE_ISA, dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".build-") as tmp:
        try:
            with _quiet_toolchain(), _wrappers_release_gil():
                cc = cc_class(cachepaths.module_name(ACTIVE_ISA), source_module=__name__)
                cc.output_dir = tmp
                cc.target_cpu = "host"  # what the JIT compiles for (NUMBA_CPU_NAME or the host)
                python_function = run_program.py_func  # type: ignore[attr-defined]
                cc.export("run_program", abi.pycc_signature())(python_function)
                cc.compile()
        except Exception as exc:  # pycc raises whatever its tool chain raises
            raise BuildError(f"pycc failed: {type(exc).__name__}: {exc}") from exc
        built = Path(tmp) / cc.output_file
        manifest = Path(tmp) / "manifest.json"
        manifest.write_text(json.dumps({"isa": ACTIVE_ISA, "cpu": target_cpu(),
                                        "sha256": cachepaths.file_sha256(built)}) + "\n")
        os.replace(built, target)
        os.replace(manifest, cachepaths.manifest_file(ACTIVE_ISA, dest))
    _remove_stale(dest)
    log.debug("compiled the %s kernels ahead of time: %s", ACTIVE_ISA, target)
    return target


def _pycc() -> Any:
    """numba's ``CC`` class; its absence (removed from a future numba) is a BuildError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycc's deprecation notice: known, see pyproject
            from numba.pycc import CC
    except ImportError as exc:
        raise BuildError(f"numba {numba.__version__} has no numba.pycc ({exc})") from exc
    return CC


@contextlib.contextmanager
def _quiet_toolchain() -> Iterator[None]:
    """No compiler command lines in the logs; the root logger's level as it was after
    (pycc's tool chain sets it through distutils and leaves it so)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _wrappers_release_gil() -> Iterator[None]:
    """Compile pycc's Python wrappers with ``release_gil`` set, like the JIT kernels'
    ``nogil=True``: inference must not block the agent's other threads. pycc has no
    option for it; it builds its compile flags from ``numba.pycc.compiler.Flags``."""
    from numba.pycc import compiler

    base = compiler.Flags

    class NoGilFlags(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    compiler.Flags = NoGilFlags  # type: ignore[misc]
    try:
        yield
    finally:
        compiler.Flags = base  # type: ignore[misc]


def _remove_stale(dest: Path) -> None:
    current = {f(isa, dest) for isa in ISAS
               for f in (cachepaths.module_file, cachepaths.manifest_file)}
    for path in dest.glob(cachepaths.AOT_PREFIX + "*"):
        if path not in current:
            log.info("removing stale AOT kernel module %s", path)
            path.unlink(missing_ok=True)
