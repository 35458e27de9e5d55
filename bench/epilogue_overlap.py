"""What a requantization costs the dot products beside it, in the float32 and the int64 form.

    python bench/epilogue_overlap.py [--iters 200000] [--reps 7]

AVX-512 VNNI only. A loop of 16 independent ``vpdpbusd`` (the issue rate) is timed alone and
with R = 1 or 2 requantizations of 16 int32 lanes per iteration, loaded from an L1 buffer and
independent of the dot products (what an out-of-order core could overlap), in two forms:
the kernels' float32 one (:func:`kernels.codegen.epilogue.requant_codes`) and the exact
int64 product rounded half away from zero that the kernels used before (kept here to
measure it). Thread CPU time, interleaved, best and median of ``--reps``. The drop in
``vpdpbusd`` per second is what each requantization costs the pipes the dot product needs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernels.codegen.epilogue import load_params, requant_codes  # noqa: E402
from kernels.codegen.microkernel import _dot_vnni  # noqa: E402
from kernels.codegen.unpack import counted_loop  # noqa: E402

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16I32 = ir.VectorType(_I32, 16)
_V16I64 = ir.VectorType(_I64, 16)
_V16I8 = ir.VectorType(ir.IntType(8), 16)


def _load16(builder: ir.IRBuilder, base: ir.Value, off: ir.Value) -> ir.Value:
    ptr = builder.bitcast(builder.gep(base, [off]), _V16I32.as_pointer())
    return builder.load(ptr, align=4)


def requant_int64(
    builder: ir.IRBuilder, a: ir.Value, bias: ir.Value, m0: ir.Value, shift: ir.Value
) -> ir.Value:
    """The former epilogue: ``sat32((int64(a + bias) * m0 + half - [p < 0]) >> shift)``,
    clamped to [0, 255] and narrowed to codes (zero point 0)."""
    v = builder.add(a, bias)
    sh = builder.sext(shift, _V16I64)
    one = ir.Constant(_V16I64, [1] * 16)
    p = builder.mul(builder.sext(v, _V16I64), builder.sext(m0, _V16I64))
    sign = builder.ashr(p, ir.Constant(_V16I64, [63] * 16))
    half = builder.shl(one, builder.sub(sh, one))
    r = builder.ashr(builder.add(builder.add(p, half), sign), sh)
    for bound, op in ((-(2**31), "<"), (2**31 - 1, ">")):
        c = ir.Constant(_V16I64, [bound] * 16)
        r = builder.select(builder.icmp_signed(op, r, c), c, r)
    r32 = builder.trunc(r, _V16I32)
    for bound, op in ((0, "<"), (255, ">")):
        c = ir.Constant(_V16I32, [bound] * 16)
        r32 = builder.select(builder.icmp_signed(op, r32, c), c, r32)
    return builder.trunc(r32, _V16I8)


def loop(requants: int, form: str) -> Any:
    """A compiled ``f(n, buf, bias, m0, shift)``: ``n`` iterations of 16 ``vpdpbusd`` and
    ``requants`` requantizations of ``form`` ("float32" or "int64")."""

    def typer(typingctx: Any, n: Any, buf: Any, bias: Any, m0: Any, shift: Any) -> Any:
        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
            count = context.cast(builder, args[0], sig.args[0], types.int64)
            ptrs = [
                context.make_array(sig.args[i])(context, builder, args[i]).data for i in range(1, 5)
            ]
            zero = ir.Constant(_I64, 0)
            x = ir.Constant(_V16I32, [0x01010101] * 16)
            w = ir.Constant(ir.VectorType(ir.IntType(8), 64), [2] * 64)
            prm = load_params(builder, *ptrs[1:], zero, zero, zero, ir.Constant(_I64, 255))
            raw = [_load16(builder, p, zero) for p in ptrs[1:]]
            init = [ir.Constant(_V16I32, [i] * 16) for i in range(16)]
            init.append(ir.Constant(_V16I8, [0] * 16))

            def body(m: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
                out = [_dot_vnni(builder, a, x, w) for a in accs[:16]]
                fold = accs[16]
                for r in range(requants):
                    at = builder.and_(builder.add(m, ir.Constant(_I64, r)), ir.Constant(_I64, 63))
                    a = _load16(builder, ptrs[0], builder.mul(at, ir.Constant(_I64, 16)))
                    codes = (
                        requant_codes(builder, a, prm)
                        if form == "float32"
                        else requant_int64(builder, a, *raw)
                    )
                    fold = builder.xor(fold, codes)  # keeps the codes live, one cheap op
                return [*out, fold]

            accs = counted_loop(builder, count, init, body, "overlap")
            total = accs[0]
            for a in accs[1:16]:
                total = builder.add(total, a)
            lane = builder.extract_element(total, ir.Constant(_I32, 0))
            code = builder.zext(builder.extract_element(accs[16], ir.Constant(_I32, 0)), _I32)
            return builder.sext(builder.add(lane, code), _I64)

        return types.int64(n, buf, bias, m0, shift), codegen

    kernel = intrinsic(typer)

    @njit
    def run(n: int, buf: Any, bias: Any, m0: Any, shift: Any) -> int:
        return kernel(n, buf, bias, m0, shift)

    return run


def main(argv: list[str] | None = None) -> int:
    """Print ``vpdpbusd`` per second with 0, 1 and 2 requantizations of each form."""
    from bench.kernel_rate import vnni_refusal

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    refusal = vnni_refusal()
    if refusal:
        print(refusal)
        return 1
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(-(2**20), 2**20, 64 * 16 + 16).astype(np.int32),
        rng.integers(-1000, 1000, 16).astype(np.int32),
        rng.integers(2**30, 2**31 - 1, 16).astype(np.int32),
        rng.integers(36, 42, 16).astype(np.int32),
    )
    cases = {"none": loop(0, "float32")}
    for r in (1, 2):
        for form in ("float32", "int64"):
            cases[f"{r} {form}"] = loop(r, form)
    for f in cases.values():
        f(10, *arrays)  # compile
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.reps):
        for name, f in cases.items():
            t = time.thread_time_ns()
            f(args.iters, *arrays)
            rates[name].append(16 * args.iters / (time.thread_time_ns() - t))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average {load}; G vpdpbusd/s, best and median of {args.reps}")
    base = statistics.median(rates["none"])
    for name, v in rates.items():
        med = statistics.median(v)
        extra = ""
        if name != "none":  # ns per iteration beyond the dot products, per requantization
            per = (16 / med - 16 / base) / int(name.split()[0])
            extra = f"; {per:.2f} ns per requantization"
        print(f"requantizations per 16 vpdpbusd: {name:10s} {max(v):.2f} / {med:.2f}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
