"""Requantization epilogue of one 16-channel accumulator row, written in LLVM vector IR.

``requant_store(acc, acc_off, rows, bias, m0, shift, c0, zo, lo, hi, out, d, n, first)``
computes, for the 16 lanes ``j`` of ``a = max(acc[acc_off + 16 * i:] for i < rows)``
(``rows > 1`` only where the sums cannot wrap, so that requantization is monotone in
them: a fused max pool before requantizing) and per-channel parameters at ``c0 + j``::

    v = int32(a + bias)                                     # wraps like the reference
    y = float32(v) * (float32(m0) * 2^-shift)               # one float32 product
    r = rint(clamp(y, lo - zo, hi - zo))                    # ties to even
    code = zo + r                                           # = clamp(zo + rint(y), lo, hi)

and writes ``code`` (or ``max(out, code)`` unless ``first``: fused max pooling) to the first
``n`` bytes of ``out[d:]``; the other lanes of those 16 bytes are written back unchanged.
Every step is one IEEE float32 operation, which numpy and every target round the same
way, so the numpy reference (:func:`kernels.plan.fixedpoint.requantize_reference`) stays
bit-exact. The integer bounds make clamping before rounding the same as after, and keep the
conversion inside int32 (``lo``, ``hi`` and ``zo`` are codes). The earlier exact int64
product (``int64(v) * m0``, rounded half away from zero by a shift) took about 20 512-bit
operations per 16 lanes, several of them 64-bit multiplies and variable shifts that compete
with ``vpdpbusd`` for its pipes: even interleaved with the dot products it cost about 2 ns
of them per 16 lanes on the Zen 4, the float32 form (8 or 9 operations) about 0.2 ns
(``bench/results/epilogue_overlap.md``); XNNPACK requantizes the same way.
The caller guarantees 16 readable entries of every array at the given offsets (parameters
are padded to whole blocks of 16 channels, activation buffers have slack).
Numba's loop over at most 16 lanes did not vectorize and cost more than the dot products.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_LANES = 16
_V16I8 = ir.VectorType(_I8, _LANES)
_V16I32 = ir.VectorType(_I32, _LANES)
_V16I64 = ir.VectorType(_I64, _LANES)
_F32 = ir.FloatType()
_V16F32 = ir.VectorType(_F32, _LANES)
_ARRAYS = {0: types.int32, 3: types.int32, 4: types.int32, 5: types.int32, 10: types.uint8}
_INTS = (1, 2, 6, 7, 8, 9, 11, 12, 13)


def _splat(builder: ir.IRBuilder, value: ir.Value, vty: ir.VectorType) -> ir.Value:
    vec = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, _LANES), [0] * 16))


def splat32(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """<16 x i32> of an i32 ``value``."""
    return _splat(builder, value, _V16I32)


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


class Requant(NamedTuple):
    """Per-channel requantization parameters of 16 lanes, loaded and converted once."""

    bias: ir.Value  # <16 x i32>
    scale: ir.Value  # <16 x float>, float32(m0) * 2^-shift
    lo: ir.Value  # <16 x float>, lo - zo
    hi: ir.Value  # <16 x float>, hi - zo
    zo: ir.Value  # <16 x i32>


def load_params(
    builder: ir.IRBuilder,
    bias: ir.Value,
    m0: ir.Value,
    shift: ir.Value,
    c0: ir.Value,
    zo: ir.Value,
    lo: ir.Value,
    hi: ir.Value,
) -> Requant:
    """The parameters of channels ``c0 .. c0 + 15`` (int32 pointers, i64 scalars)."""
    # 2^-shift as float32 bits: exponent field 127 - shift (1 <= shift <= 62: a normal number)
    exp = builder.sub(ir.Constant(_V16I32, [127] * _LANES), _load(builder, shift, c0, _V16I32))
    pow2 = builder.bitcast(builder.shl(exp, ir.Constant(_V16I32, [23] * _LANES)), _V16F32)
    scale = builder.fmul(builder.sitofp(_load(builder, m0, c0, _V16I32), _V16F32), pow2)
    zo32 = builder.trunc(zo, _I32)

    def bound(v: ir.Value) -> ir.Value:  # v - zo as <16 x float>
        return _splat(
            builder, builder.sitofp(builder.sub(builder.trunc(v, _I32), zo32), _F32), _V16F32
        )

    return Requant(
        bias=_load(builder, bias, c0, _V16I32),
        scale=scale,
        lo=bound(lo),
        hi=bound(hi),
        zo=_splat(builder, zo32, _V16I32),
    )


def requant_codes(builder: ir.IRBuilder, a: ir.Value, prm: Requant) -> ir.Value:
    """The codes (<16 x i8>) of int32 sums ``a`` (the module docstring's arithmetic)."""
    v = builder.add(a, prm.bias)
    y = builder.fmul(builder.sitofp(v, _V16F32), prm.scale)
    # clamp first (integer bounds: the same as clamping after rounding), so the conversion
    # never leaves int32; ordered compares lower to plain vmaxps / vminps
    y = builder.select(builder.fcmp_ordered("<", y, prm.lo), prm.lo, y)
    y = builder.select(builder.fcmp_ordered(">", y, prm.hi), prm.hi, y)
    rint = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V16F32, [_V16F32]), "llvm.rint.v16f32"
    )
    r = builder.fptosi(builder.call(rint, [y]), _V16I32)  # nearest, ties to even
    return builder.trunc(builder.add(r, prm.zo), _V16I8)


def lane_mask(builder: ir.IRBuilder, n: ir.Value) -> ir.Value:
    """<16 x i1>: lanes below ``n`` (i64)."""
    lanes = ir.Constant(_V16I64, list(range(_LANES)))
    return builder.icmp_signed("<", lanes, _splat(builder, n, _V16I64))


def put_codes(
    builder: ir.IRBuilder, out: ir.Value, d: ir.Value, y8: ir.Value, first: ir.Value, mask: ir.Value
) -> None:
    """Store ``y8`` at ``out[d:]`` (or its max with what is there unless ``first``, an
    i1: fused max pooling), lanes outside ``mask`` written back unchanged."""
    old = _load(builder, out, d, _V16I8)
    pooled = builder.select(builder.icmp_unsigned(">", y8, old), y8, old)
    res = builder.select(first, y8, pooled)
    ptr = builder.bitcast(builder.gep(out, [d]), _V16I8.as_pointer())
    builder.store(builder.select(mask, res, old), ptr, align=1)


def _codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    ptrs = {i: context.make_array(sig.args[i])(context, builder, args[i]).data for i in _ARRAYS}
    acc_off, rows, c0, zo, lo, hi, d, n, first = (
        context.cast(builder, args[i], sig.args[i], types.int64) for i in _INTS
    )
    a = _rows_max(builder, ptrs[0], acc_off, rows)
    prm = load_params(builder, ptrs[3], ptrs[4], ptrs[5], c0, zo, lo, hi)
    y8 = requant_codes(builder, a, prm)
    is_first = builder.icmp_signed("!=", first, ir.Constant(_I64, 0))
    put_codes(builder, ptrs[10], d, y8, is_first, lane_mask(builder, n))


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
