"""Choice of the instruction set the JIT compiles the dot-product micro-kernel for.

``avx512vnni``: x86 ``vpdpbusd`` on 512-bit vectors (u8 x s8 -> i32, four products per
lane). ``avx2``: x86 ``vpmaddwd`` on operands widened to 16 bits
(:mod:`kernels.codegen.madd`; AVX2 has no exact byte dot product). ``neon-sdot``: AArch64
``sdot`` (s8 x s8 -> i32; Armv8.2 dot product, e.g. the Cortex-A76 of a Raspberry Pi 5):
activations are shifted to signed (``x - 128``) and the shift is folded into the bias (see
:func:`kernels.plan.targets.act_offset`). ``generic``: plain LLVM vector IR of the u8 x s8
arithmetic, valid on every target (LLVM lowers it to SSE/NEON; the Pi 4's path). The
environment variable ``EDGE_AGENT_KERNEL_ISA`` forces a choice (tests use it to keep the
portable path checked on any machine). Importing this module imports numba; ahead-of-time
compiled kernels record their instruction set instead (:mod:`kernels.exec.backend`).
"""

from __future__ import annotations

import platform

import llvmlite.binding as llvm
import numba

from kernels.plan.targets import ENV_VAR, forced
from kernels.plan.targets import ISAS as ISAS  # re-exported: tests/arm64/run.sh lists them here

#: AArch64 CPUs (LLVM names, as in NUMBA_CPU_NAME) that have the dot-product extension
DOTPROD_CPUS = frozenset(
    {
        "cortex-a55",
        "cortex-a75",
        "cortex-a76",
        "cortex-a77",
        "cortex-a78",
        "cortex-x1",
        "neoverse-n1",
        "neoverse-v1",
        "neoverse-n2",
        "apple-m1",
        "apple-m2",
    }
)


def host_features() -> set[str]:
    """CPU features numba compiles for (the host's, unless overridden by NUMBA_CPU_*)."""
    text = getattr(numba.config, "CPU_FEATURES", None) or llvm.get_host_cpu_features().flatten()
    return {f[1:] for f in text.split(",") if f.startswith("+")}


def target_cpu() -> str:
    """CPU name numba compiles for (``NUMBA_CPU_NAME`` or the host's)."""
    return getattr(numba.config, "CPU_NAME", None) or llvm.get_host_cpu_name()


def detect() -> str:
    """Best instruction set of the target numba compiles for."""
    feats = host_features()
    if {"avx512vnni", "avx512bw", "avx512f"} <= feats:
        return "avx512vnni"
    if platform.machine() in ("aarch64", "arm64") and (
        "dotprod" in feats or target_cpu() in DOTPROD_CPUS
    ):
        return "neon-sdot"
    if "avx2" in feats:
        return "avx2"
    return "generic"


def select() -> str:
    """The instruction set to use: ``EDGE_AGENT_KERNEL_ISA`` if set and valid, else detected."""
    isa = forced()
    if isa is None:
        return detect()
    # generic runs anywhere; avx2 on any AVX2 CPU, so that a VNNI host can check it too
    portable = isa == "generic" or (isa == "avx2" and "avx2" in host_features())
    if not portable and isa != detect():
        raise ValueError(f"{ENV_VAR}={isa!r} is not supported by this CPU")
    return isa


ACTIVE_ISA = select()
