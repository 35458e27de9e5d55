"""Requantization epilogue of one 16-channel accumulator row, written in LLVM vector IR.

``requant_store(acc, acc_off, rows, bias, m0, shift, c0, zo, lo, hi, out, d, n, first)``
computes, for the 16 lanes ``j`` of ``a = max(acc[acc_off + 16 * i:] for i < rows)``
(``rows > 1`` only where the sums cannot wrap, so that requantization is monotone in
them: a fused max pool before requantizing) and per-channel parameters at ``c0 + j``,
in int32 only (gemmlowp's fixed point, docs/quantization.md)::

    v = a + bias                                            # wraps like the reference
    x = sat32(v << left)                                    # left = max(31 - shift, 0)
    h = (int64(x) * m0 + 2^30) >> 31                        # SaturatingRoundingDoublingHighMul
    r = (h >> right) + [(h & mask) > (mask >> 1) + (h < 0)] # RoundingDivideByPOT, half away
    y = zo + clamp(r, lo - zo, hi - zo)                     # = clamp(zo + r, lo, hi), no wrap

(``right = clip(shift - 31, 0, 31)``, ``mask = 2^right - 1``; the product is the one
64-bit step, a widening multiply of int32 lanes) and writes ``y`` (or ``max(out, y)``
unless ``first``: fused max pooling) to the first ``n`` bytes of ``out[d:]``; the other
lanes of those 16 bytes are written back unchanged. ``lo - zo`` and ``hi - zo`` must fit
int32 (for codes ``0 <= lo <= zo <= hi <= 255``).
So the caller guarantees 16 readable entries of every array at the given offsets
(parameters are padded to whole blocks of 16 channels, activation buffers have slack).
Numba's loop over at most 16 lanes did not vectorize and cost more than the dot products;
the former int64 arithmetic cost about as much as them.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_LANES = 16
_V16I8 = ir.VectorType(_I8, _LANES)
_V16I32 = ir.VectorType(_I32, _LANES)
_V16I64 = ir.VectorType(_I64, _LANES)
_ARRAYS = {0: types.int32, 3: types.int32, 4: types.int32, 5: types.int32, 10: types.uint8}
_INTS = (1, 2, 6, 7, 8, 9, 11, 12, 13)


def _splat(builder: ir.IRBuilder, value: ir.Value, vty: ir.VectorType) -> ir.Value:
    vec = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, _LANES), [0] * 16))


def _load(builder: ir.IRBuilder, base: ir.Value, off: ir.Value, vty: ir.VectorType) -> ir.Value:
    ptr = builder.bitcast(builder.gep(base, [off]), vty.as_pointer())
    return builder.load(ptr, align=1)


def _rows_max(builder: ir.IRBuilder, acc: ir.Value, off: ir.Value, rows: ir.Value) -> ir.Value:
    """Lane-wise signed max of ``rows`` consecutive 16-lane rows from ``acc[off:]``."""
    entry = builder.block
    loop = builder.append_basic_block("rows_max")
    done = builder.append_basic_block("rows_max_done")
    first = _load(builder, acc, off, _V16I32)
    builder.cbranch(builder.icmp_signed(">", rows, ir.Constant(_I64, 1)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(ir.Constant(_I64, 1), entry)
    cur = builder.phi(_V16I32)
    cur.add_incoming(first, entry)
    row = _load(builder, acc, builder.add(off, builder.mul(i, ir.Constant(_I64, _LANES))), _V16I32)
    new = builder.select(builder.icmp_signed(">", row, cur), row, cur)
    i_next = builder.add(i, ir.Constant(_I64, 1))
    i.add_incoming(i_next, loop)
    cur.add_incoming(new, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, rows), loop, done)
    builder.position_at_end(done)
    out = builder.phi(_V16I32)
    out.add_incoming(first, entry)
    out.add_incoming(new, loop)
    return out


def _const(value: int) -> ir.Constant:
    return ir.Constant(_V16I32, [value] * _LANES)


def _fixed_point(builder: ir.IRBuilder, v: ir.Value, m0: ir.Value, shift: ir.Value) -> ir.Value:
    """``v * m0 * 2^-shift`` in gemmlowp's int32 fixed point (module docstring)."""
    zero, int_max = _const(0), _const(2**31 - 1)
    left = builder.sub(_const(31), shift)
    left = builder.select(builder.icmp_signed("<", left, zero), zero, left)
    right = builder.sub(shift, _const(31))
    right = builder.select(builder.icmp_signed("<", right, zero), zero, right)
    right = builder.select(builder.icmp_signed(">", right, _const(31)), _const(31), right)
    # saturating left shift: where shifting back does not give v, v's sign picks the limit
    shifted = builder.shl(v, left)
    sign = builder.ashr(v, _const(31))  # -1 where v < 0, else 0
    limit = builder.xor(int_max, sign)  # INT32_MAX, or INT32_MIN where v < 0
    overflow = builder.icmp_signed("!=", builder.ashr(shifted, left), v)
    x = builder.select(overflow, limit, shifted)
    p = builder.mul(builder.sext(x, _V16I64), builder.sext(m0, _V16I64))
    p = builder.add(p, ir.Constant(_V16I64, [1 << 30] * _LANES))
    h = builder.trunc(builder.ashr(p, ir.Constant(_V16I64, [31] * _LANES)), _V16I32)
    mask = builder.sub(builder.shl(_const(1), right), _const(1))
    threshold = builder.sub(builder.ashr(mask, _const(1)), builder.ashr(h, _const(31)))
    above = builder.icmp_signed(">", builder.and_(h, mask), threshold)
    return builder.add(builder.ashr(h, right), builder.zext(above, _V16I32))


def _codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    ptrs = {i: context.make_array(sig.args[i])(context, builder, args[i]).data for i in _ARRAYS}
    acc_off, rows, c0, zo, lo, hi, d, n, first = (
        context.cast(builder, args[i], sig.args[i], types.int64) for i in _INTS
    )
    a = _rows_max(builder, ptrs[0], acc_off, rows)
    v = builder.add(a, _load(builder, ptrs[3], c0, _V16I32))
    m0 = _load(builder, ptrs[4], c0, _V16I32)
    shift = _load(builder, ptrs[5], c0, _V16I32)
    r = _fixed_point(builder, v, m0, shift)
    # clamp r itself to [lo - zo, hi - zo] (small numbers): zo + r could wrap int32
    lo_v = _splat(builder, builder.trunc(builder.sub(lo, zo), _I32), _V16I32)
    hi_v = _splat(builder, builder.trunc(builder.sub(hi, zo), _I32), _V16I32)
    r = builder.select(builder.icmp_signed("<", r, lo_v), lo_v, r)
    r = builder.select(builder.icmp_signed(">", r, hi_v), hi_v, r)
    y8 = builder.trunc(builder.add(r, _splat(builder, builder.trunc(zo, _I32), _V16I32)), _V16I8)
    old = _load(builder, ptrs[10], d, _V16I8)
    pooled = builder.select(builder.icmp_unsigned(">", y8, old), y8, old)
    is_first = builder.icmp_signed("!=", first, ir.Constant(_I64, 0))
    res = builder.select(is_first, y8, pooled)
    lanes = ir.Constant(_V16I64, list(range(_LANES)))
    mask = builder.icmp_signed("<", lanes, _splat(builder, n, _V16I64))
    ptr = builder.bitcast(builder.gep(ptrs[10], [d]), _V16I8.as_pointer())
    builder.store(builder.select(mask, res, old), ptr, align=1)


def _typer(
    typingctx: Any,
    acc: Any,
    acc_off: Any,
    rows: Any,
    bias: Any,
    m0: Any,
    shift: Any,
    c0: Any,
    zo: Any,
    lo: Any,
    hi: Any,
    out: Any,
    d: Any,
    n: Any,
    first: Any,
) -> Any:
    """Typing of :data:`requant_store` (see the module docstring); ``first`` is a bool."""
    sig_args = (acc, acc_off, rows, bias, m0, shift, c0, zo, lo, hi, out, d, n, first)
    for i, dtype in _ARRAYS.items():
        t = sig_args[i]
        if not (isinstance(t, types.Array) and t.ndim == 1 and t.dtype == dtype):
            return None
    if not all(isinstance(sig_args[i], (types.Integer, types.Boolean)) for i in _INTS):
        return None
    return types.void(*sig_args), _codegen


requant_store: Any = intrinsic(_typer)
