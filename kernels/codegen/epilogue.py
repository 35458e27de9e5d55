"""Requantization epilogue of one 16-channel accumulator row, written in LLVM vector IR.

``requant_store(acc, acc_off, rows, bias, m0, shift, c0, zo, lo, hi, out, d, n, first)``
computes, for the 16 lanes ``j`` of ``a = max(acc[acc_off + 16 * i:] for i < rows)``
(``rows > 1`` only where the sums cannot wrap, so that requantization is monotone in
them: a fused max pool before requantizing) and per-channel parameters at ``c0 + j``::

    v = int32(a + bias)                                     # wraps like the reference
    p = int64(v) * int64(m0)
    y = clamp(zo + ((p + 2^(shift-1) - [p < 0]) >> shift), lo, hi)   # round half away

and writes ``y`` (or ``max(out, y)`` unless ``first``: fused max pooling) to the first
``n`` bytes of ``out[d:]``; the other lanes of those 16 bytes are written back unchanged.
So the caller guarantees 16 readable entries of every array at the given offsets
(parameters are padded to whole blocks of 16 channels, activation buffers have slack).
Numba's loop over at most 16 lanes did not vectorize and cost more than the dot products.
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


def _codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    ptrs = {i: context.make_array(sig.args[i])(context, builder, args[i]).data for i in _ARRAYS}
    acc_off, rows, c0, zo, lo, hi, d, n, first = (
        context.cast(builder, args[i], sig.args[i], types.int64) for i in _INTS
    )
    a = _rows_max(builder, ptrs[0], acc_off, rows)
    v = builder.add(a, _load(builder, ptrs[3], c0, _V16I32))
    m0 = builder.sext(_load(builder, ptrs[4], c0, _V16I32), _V16I64)
    shift = builder.sext(_load(builder, ptrs[5], c0, _V16I32), _V16I64)
    p = builder.mul(builder.sext(v, _V16I64), m0)
    one = ir.Constant(_V16I64, [1] * _LANES)
    half = builder.shl(one, builder.sub(shift, one))
    sign = builder.ashr(p, ir.Constant(_V16I64, [63] * _LANES))  # -1 where p < 0, else 0
    r = builder.ashr(builder.add(builder.add(p, half), sign), shift)
    y = builder.add(r, _splat(builder, zo, _V16I64))
    lo_v, hi_v = _splat(builder, lo, _V16I64), _splat(builder, hi, _V16I64)
    y = builder.select(builder.icmp_signed("<", y, lo_v), lo_v, y)
    y = builder.select(builder.icmp_signed(">", y, hi_v), hi_v, y)
    y8 = builder.trunc(y, _V16I8)
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
