"""The kernels the engine runs: compiled ahead of time if possible, else numba's JIT.

``EDGE_AGENT_KERNELS`` chooses: ``auto`` (the default) loads the ahead-of-time (AOT)
module built for these kernel sources, this software and this CPU
(:mod:`kernels.build.cachepaths`) if there is a usable one, and JIT-compiles otherwise; ``aot``
insists on the module (an error without one); ``jit`` always JIT-compiles. Loading an AOT
module imports neither numba nor llvmlite, which keeps an engine-only process small; numba
is imported only when the JIT is used. A module built for other kernel sources, software
or CPU, or not matching the SHA-256 its manifest records (truncated, altered), is logged
and skipped. ``EDGE_AGENT_KERNEL_ISA`` restricts the choice to one instruction set, as it
does for the JIT.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from kernels.build import cachepaths
from kernels.plan.targets import ISAS, act_offset, forced

log = logging.getLogger(__name__)

MODE_VAR = "EDGE_AGENT_KERNELS"
MODES = ("auto", "aot", "jit")


class KernelsUnavailable(RuntimeError):
    """The kernels asked for cannot be loaded."""


@dataclass(frozen=True)
class Kernels:
    """A loaded implementation of :func:`kernels.codegen.runner.run_program`."""

    backend: str  # "aot" or "jit"
    isa: str
    run_program: Callable[..., int]  # returns the number of non-finite samples
    origin: str  # the AOT module file, or the JIT cache directory

    @property
    def act_offset(self) -> int:
        """What the dot product subtracts from activation codes (folded into the biases)."""
        return act_offset(self.isa)

    def describe(self) -> str:
        """One line for logs: backend, instruction set and where the code comes from."""
        if self.backend == "aot":
            return f"ahead-of-time compiled, {self.isa}, {self.origin}"
        return f"numba JIT, {self.isa}, cache {self.origin}"


def load(mode: str | None = None, aot_dir: Path | None = None) -> Kernels:
    """Kernels for ``mode`` (default: ``EDGE_AGENT_KERNELS`` or ``auto``).

    ``aot_dir`` is where AOT modules are looked for (default :func:`cachepaths.aot_dir`).
    """
    mode = mode or os.environ.get(MODE_VAR, "").strip() or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_VAR}={mode!r} is not one of {MODES}")
    kernels = None
    if mode != "jit":
        directory = cachepaths.aot_dir() if aot_dir is None else aot_dir
        kernels = _load_aot(directory)
        if kernels is None and mode == "aot":
            raise KernelsUnavailable(
                f"{MODE_VAR}=aot, but {directory} holds no usable ahead-of-time kernel module "
                "for this machine and these kernels (build it with `edge-agent compile-kernels`)"
            )
    if kernels is None:
        kernels = _jit()
    log.info("kernels: %s", kernels.describe())
    return kernels


@functools.cache
def default() -> Kernels:
    """The process's kernels, chosen once from the environment and shared by all engines."""
    return load()


def _load_aot(directory: Path) -> Kernels | None:
    files = {isa: cachepaths.module_file(isa, directory) for isa in ISAS}
    current = set(files.values())
    for path in sorted(directory.glob(f"{cachepaths.AOT_PREFIX}*{cachepaths.EXTENSION_SUFFIX}")):
        if path not in current:
            log.info(
                "ignoring stale AOT kernel module %s (built for other kernel sources, "
                "software or CPU)",
                path,
            )
    isa_forced = forced()
    for isa in [isa_forced] if isa_forced else ISAS:
        path = files[isa]
        if not path.is_file():
            continue
        try:
            _verify(path, isa, cachepaths.manifest_file(isa, directory))
            run_program = _import(path).run_program
        except (ImportError, AttributeError, OSError, ValueError) as exc:
            log.warning("ignoring AOT kernel module %s: %s", path, exc)
            continue
        return Kernels("aot", isa, run_program, str(path))
    return None


def _verify(path: Path, isa: str, manifest: Path) -> None:
    """Raise ValueError unless the manifest vouches for the module file as it is."""
    try:
        meta = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise ValueError(f"no manifest {manifest.name}") from None
    if meta.get("isa") != isa:
        raise ValueError(f"its manifest says {meta.get('isa')!r}, not {isa!r}")
    if meta.get("sha256") != cachepaths.file_sha256(path):
        raise ValueError("its contents do not match the SHA-256 in its manifest")


def _import(path: Path) -> ModuleType:
    """Load an extension module from a file (not registered in ``sys.modules``)."""
    name = path.name.removesuffix(cachepaths.EXTENSION_SUFFIX)
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot make an import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _jit() -> Kernels:
    # imported here: these modules import numba, which the AOT path must not
    from kernels.codegen.isa import ACTIVE_ISA
    from kernels.codegen.jit import CACHE_DIR
    from kernels.codegen.runner import run_program

    return Kernels("jit", ACTIVE_ISA, run_program, str(CACHE_DIR))
