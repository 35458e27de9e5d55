"""The AArch64 ``sdot`` micro-kernel path, checked from any host.

Its bit-exactness is tested on an (emulated) Cortex-A76 by tests/arm64/run.sh, which
runs the kernel and engine tests there; here: instruction selection of the dot product
for AArch64, the choice of the instruction set, and the bias fold of signed activations.
"""

from __future__ import annotations

import numpy as np
import pytest
from llvmlite import ir

from kernels.codegen import isa
from kernels.codegen.listing import emit_assembly
from kernels.codegen.microkernel import _V16I32, _V64I8, _dot_sdot


def _aarch64_asm(cpu: str, features: str) -> str:
    module = ir.Module(name="sdot_test")
    module.triple = "aarch64-unknown-linux-gnu"
    fn = ir.Function(module, ir.FunctionType(_V16I32, [_V16I32, _V16I32, _V64I8]), "dot")
    builder = ir.IRBuilder(fn.append_basic_block())
    builder.ret(_dot_sdot(builder, *fn.args))
    return emit_assembly(module, cpu, features, opt=2)


def test_sdot_lowers_to_four_dot_products_on_cortex_a76() -> None:
    asm = _aarch64_asm("cortex-a76", "")
    assert asm.count("sdot\t") == 4, asm


def test_detect_picks_sdot_only_with_the_dot_product_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isa.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(isa, "host_features", lambda: {"neon", "dotprod"})
    assert isa.detect() == "neon-sdot"
    monkeypatch.setattr(isa, "host_features", lambda: {"neon"})
    monkeypatch.setattr(isa, "target_cpu", lambda: "cortex-a72")  # Raspberry Pi 4
    assert isa.detect() == "generic"
    monkeypatch.setattr(isa, "target_cpu", lambda: "cortex-a76")  # Raspberry Pi 5
    assert isa.detect() == "neon-sdot"


def test_signed_activations_fold_into_the_bias() -> None:
    """sum (x - z) q + b == sum (x - 128) q + [b - (z - 128) rowsum(q)], wrapping in int32."""
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (5, 300)).astype(np.int64)
    x = rng.integers(0, 256, 300).astype(np.int64)
    z, b = 77, rng.integers(-(2**31), 2**31, 5)
    want = ((x - z) @ q.T + b).astype(np.int32)
    folded = (b - (z - 128) * q.sum(axis=1)).astype(np.int32)
    signed = (x.astype(np.uint8) ^ 0x80).view(np.int8).astype(np.int64)
    np.testing.assert_array_equal((signed @ q.T + folded).astype(np.int32), want)
