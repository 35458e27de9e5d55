"""Names of the kernels' instruction sets and what each means for the integer arithmetic.

Numba-free: a process running ahead-of-time compiled kernels (:mod:`kernels.exec.backend`)
needs these without importing numba. Which one the JIT compiles for is decided by
:mod:`kernels.codegen.isa`.
"""

from __future__ import annotations

import os

ISAS = ("avx512vnni", "neon-sdot", "avx2", "generic")  # best first
ENV_VAR = "EDGE_AGENT_KERNEL_ISA"
#: dot products that take activations as s8 (``x - 128``): AArch64 ``sdot``
SIGNED_ACTIVATIONS = frozenset({"neon-sdot"})


def forced() -> str | None:
    """The instruction set ``EDGE_AGENT_KERNEL_ISA`` asks for, or None if it is unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if value not in ISAS:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {ISAS}")
    return value


def act_offset(isa: str) -> int:
    """What the dot product of ``isa`` subtracts from every activation code.

    128 where activations enter it as s8, else 0; :mod:`kernels.plan.program` folds the
    weights' row sums times this offset back into the bias.
    """
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}")
    return 128 if isa in SIGNED_ACTIVATIONS else 0
