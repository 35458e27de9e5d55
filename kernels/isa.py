"""Choice of the instruction set the dot-product micro-kernel is compiled for.

``avx512vnni``: x86 ``vpdpbusd`` on 512-bit vectors (u8 x s8 -> i32, four products per
lane). ``generic``: plain LLVM vector IR of the same arithmetic, valid on every target
(LLVM lowers it to SSE/AVX2/NEON). The environment variable ``EDGE_AGENT_KERNEL_ISA``
forces a choice (tests use it to keep the portable path checked on any machine).
"""

from __future__ import annotations

import logging
import os

import llvmlite.binding as llvm
import numba

log = logging.getLogger(__name__)

ISAS = ("avx512vnni", "generic")
ENV_VAR = "EDGE_AGENT_KERNEL_ISA"


def host_features() -> set[str]:
    """CPU features numba compiles for (the host's, unless overridden by NUMBA_CPU_*)."""
    text = getattr(numba.config, "CPU_FEATURES", None) or llvm.get_host_cpu_features().flatten()
    return {f[1:] for f in text.split(",") if f.startswith("+")}


def detect() -> str:
    """Best instruction set of the host for the micro-kernel."""
    feats = host_features()
    if {"avx512vnni", "avx512bw", "avx512f"} <= feats:
        return "avx512vnni"
    return "generic"


def select() -> str:
    """The instruction set to use: ``EDGE_AGENT_KERNEL_ISA`` if set and valid, else detected."""
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        if forced not in ISAS:
            raise ValueError(f"{ENV_VAR}={forced!r} is not one of {ISAS}")
        if forced != "generic" and forced != detect():
            raise ValueError(f"{ENV_VAR}={forced!r} is not supported by this CPU")
        return forced
    return detect()


ACTIVE_ISA = select()
