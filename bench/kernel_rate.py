"""How close the fused GEMM comes to the CPU's dot-product issue rate, by reduction length.

    python bench/kernel_rate.py [--k 32 160 192 640 1024] [--out 64] [--rows 512] [--seconds 1]

AVX-512 VNNI only. Times :func:`kernels.codegen.gemm.gemm_rows` on a hidden layer of ``--out``
output channels over ``--rows`` random uint8 rows (8-bit weights, plain row layout, no
pooling) for each reduction length ``K``, and a loop of 16 independent ``vpdpbusd`` (the
issue rate: no GEMM can run its dot products faster), interleaved by thread CPU time (best
and median of 5). Prints ``vpdpbusd`` per second and the GEMM's share of the peak: what the
epilogue (requantization, stores) and the per-tile work cost at that ``K``, the
``(1 - share)`` a model's layers of that shape cannot recover in the dot products.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16I32 = ir.VectorType(_I32, 16)
_CHAINS = 16


def _loop_typer(typingctx: Any, n: Any) -> Any:
    """Typing of :data:`_dpbusd_loop`."""
    from kernels.codegen.microkernel import _dot_vnni
    from kernels.codegen.unpack import counted_loop

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        count = context.cast(builder, args[0], sig.args[0], types.int64)
        x = ir.Constant(_V16I32, [0x01010101] * 16)
        w = ir.Constant(ir.VectorType(ir.IntType(8), 64), [2] * 64)
        init = [ir.Constant(_V16I32, [i] * 16) for i in range(_CHAINS)]

        def body(m: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            return [_dot_vnni(builder, a, x, w) for a in accs]

        accs = counted_loop(builder, count, init, body, "peak")
        total = accs[0]
        for a in accs[1:]:
            total = builder.add(total, a)
        return builder.sext(builder.extract_element(total, ir.Constant(_I32, 0)), _I64)

    return types.int64(n), codegen


#: ``_dpbusd_loop(n)``: ``n`` iterations of 16 independent ``vpdpbusd``; a lane of the sums
_dpbusd_loop: Any = intrinsic(_loop_typer)


@njit
def _peak(n: int) -> int:
    return _dpbusd_loop(n)


def gemm_case(k: int, out_ch: int, rows: int) -> tuple[Any, int]:
    """A ``gemm_rows`` call on random data and its ``vpdpbusd`` count."""
    from kernels.codegen.gemm import gemm_rows, identity_map
    from kernels.plan.layout import padded_k, to_panel
    from kernels.plan.tables import I32_SCRATCH, PANEL_ROWS

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (out_ch, k)).astype(np.int8)
    panel = np.concatenate([to_panel(q, 8), np.zeros(256, np.uint8)])
    a = rng.integers(0, 256, rows * k + 256).astype(np.uint8)
    params = out_ch + 32  # epilogue parameters are read in whole blocks of 16
    bias = np.zeros(params, np.int32)
    m0 = np.full(params, 1 << 30, np.int32)
    shift = np.full(params, 40, np.int32)
    out_mult = np.ones(params, np.float32)
    out = np.zeros(rows * out_ch + 256, np.uint8)
    logits = np.zeros(1, np.float32)
    acc = np.zeros(I32_SCRATCH, np.int32)
    scratch = np.zeros(8 + PANEL_ROWS, np.int64)
    args: tuple[Any, ...] = (a, k, rows, panel, 0, 8, k, out_ch, bias, m0, shift, out_mult)
    args += (0, 0, 0, 255, False, identity_map(out_ch), out, logits, acc, scratch)
    dots = rows * (-(-out_ch // 16)) * (padded_k(k, 8) // 4)
    return (lambda: gemm_rows(*args)), dots


def vnni_refusal() -> str | None:
    """Why a ``vpdpbusd`` measurement cannot run here (kernels of another ISA), or None."""
    from kernels.codegen.isa import ACTIVE_ISA

    if ACTIVE_ISA == "avx512vnni":
        return None
    return f"needs AVX-512 VNNI kernels; this machine's are {ACTIVE_ISA}"


def main(argv: list[str] | None = None) -> int:
    """Print the peak and each K's GEMM rate."""
    from bench.cputime import interleaved

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 160, 192, 640, 1024])
    parser.add_argument("--out", type=int, default=64)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    if refusal := vnni_refusal():
        print(refusal)
        return 1
    loops = 20000
    cases: dict[str, tuple[Any, int]] = {"peak": ((lambda: _peak(loops)), loops * _CHAINS)}
    for k in args.k:
        cases[f"K={k}"] = gemm_case(k, args.out, args.rows)
    rates, info = interleaved(cases, args.seconds * len(cases), reps=5)
    peak = rates["peak"]["cpu_best"]
    print(f"load average {info['loadavg_start'][0]:.1f} -> {info['loadavg_end'][0]:.1f}")
    print(f"peak: {peak / 1e9:.2f} G vpdpbusd/s (16 independent chains; best of 5)")
    for k in args.k:
        r = rates[f"K={k}"]
        print(
            f"gemm_rows K={k} out={args.out} rows={args.rows}: {r['cpu_best'] / 1e9:.2f} G/s "
            f"best, {r['cpu_median'] / 1e9:.2f} median = {r['cpu_best'] / peak:.0%} of the peak"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
