"""The micro-kernel's reduction on AVX2 without VNNI: exact 16-bit multiply-add pairs.

AVX2 has no 4-way u8 x s8 dot product. ``vpmaddubsw`` multiplies u8 by s8 but saturates
its 16-bit pair sums (255 * -128 * 2 does not fit), so it is not exact for 8-bit weights.
``vpmaddwd`` is: both operands widened to 16 bits, ``x0 * w0 + x1 * w1`` per int32 lane
(ruy's and XNNPACK's AVX2 int8 kernels do the same). A tile's 64 weights (16 channels by 4
inputs, byte ``4*o + j``) widen to four <16 x i16> vectors of 4 channels each; one
activation word, widened and repeated, multiplies each, so lane ``2o`` holds the sum over
inputs 0-1 and lane ``2o + 1`` over inputs 2-3 of channel ``o``: the pairs are added once
per tile, after the loop. That is four <8 x i32> accumulators per row: with AVX2's 16
vector registers a loop covers two rows (8 accumulators, 4 weight vectors, the activation
words), and more rows are further passes over the block's chunks (which stay in L1).

Sub-byte weights are small enough for ``vpmaddubsw`` (u8 x s8, 32 products per
instruction): its pair sums are at most ``255 * 2^(b-1) * 2`` in magnitude, and so are
those of a whole chunk's tiles added in 16 bits (at most 16,320 for 3 bits' eight tiles of
``|q| <= 4``): no saturation, exact. Once per chunk ``vpmaddwd`` by ones widens them to
int32 and adds each channel's two pairs, so the accumulators hold channel sums directly.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.codegen.unpack import chunk_planes, chunk_tiles, row_pointers
from kernels.plan.layout import CHUNK

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16I16 = ir.VectorType(_I16, 16)
_V32I8 = ir.VectorType(_I8, 32)
_V8I32 = ir.VectorType(_I32, 8)
_ONES = ir.Constant(_V16I16, [1] * 16)
_ZERO8 = ir.Constant(_V32I8, [0] * 32)
#: rows per reduction loop (registers: 4 accumulators per row, 4 weight vectors)
PASS_ROWS = 2


def _mask(values: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


def _madd(builder: ir.IRBuilder, x: ir.Value, w: ir.Value) -> ir.Value:
    fnty = ir.FunctionType(_V8I32, [_V16I16, _V16I16])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.wd")
    return builder.call(fn, [x, w])


def _maddubs(builder: ir.IRBuilder, x: ir.Value, w: ir.Value) -> ir.Value:
    fnty = ir.FunctionType(_V16I16, [_V32I8, _V32I8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.ub.sw")
    return builder.call(fn, [x, w])


def _x_words(builder: ir.IRBuilder, word: ir.Value) -> ir.Value:
    """Four activation bytes (an i32) as <16 x i16>: ``x0 x1 x2 x3`` four times.

    Written as a broadcast word interleaved with zero bytes: one ``vpunpcklbw`` after a
    ``vpbroadcastd`` from memory (widening first took three instructions).
    """
    v8i32 = ir.VectorType(_I32, 8)
    splat = builder.insert_element(ir.Constant(v8i32, None), word, ir.Constant(_I32, 0))
    splat = builder.shuffle_vector(splat, splat, _mask([0] * 8))
    xb = builder.bitcast(splat, _V32I8)
    # bytes 0..7 of each 128-bit half, each followed by a zero byte (little-endian u16)
    order = [j for half in (0, 16) for i in range(8) for j in (half + i, 32 + half + i)]
    return builder.bitcast(builder.shuffle_vector(xb, _ZERO8, _mask(order)), _V16I16)


def _weights(builder: ir.IRBuilder, tile: ir.Value, signed: bool) -> list[ir.Value]:
    """A <64 x i8> tile as four <16 x i16> (channels 4q .. 4q + 3 each), sign- or
    zero-extended."""
    quarters = [_mask(list(range(16 * q, 16 * q + 16))) for q in range(4)]
    widen = builder.sext if signed else builder.zext
    return [widen(builder.shuffle_vector(tile, tile, m), _V16I16) for m in quarters]


def _fold(builder: ir.IRBuilder, parts: list[ir.Value]) -> ir.Value:
    """The <16 x i32> sums of one row from its four pair-sum accumulators."""
    low = builder.shuffle_vector(parts[0], parts[1], _mask(list(range(16))))
    high = builder.shuffle_vector(parts[2], parts[3], _mask(list(range(16))))
    even = builder.shuffle_vector(low, high, _mask(list(range(0, 32, 2))))
    odd = builder.shuffle_vector(low, high, _mask(list(range(1, 32, 2))))
    return builder.add(even, odd)


def _pass(
    builder: ir.IRBuilder,
    rows: list[ir.Value],
    w_base: ir.Value,
    nchunks: ir.Value,
    bits: int,
    codes: bool,
) -> list[ir.Value]:
    """One reduction loop over a block's chunks for a few rows; their <16 x i32> sums
    (with the 8-bit codes ``q + 128`` as weights where ``codes``)."""
    per_row = 4 if bits == 8 else 2  # <8 x i32> accumulators of a row
    entry = builder.block
    loop = builder.append_basic_block("madd_loop")
    done = builder.append_basic_block("madd_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(ir.Constant(_I64, 0), entry)
    accs = []
    for _ in range(per_row * len(rows)):
        phi = builder.phi(_V8I32)
        phi.add_incoming(ir.Constant(_V8I32, None), entry)
        accs.append(phi)
    if codes:  # 8 bits: the plane holds the codes themselves
        tiles = chunk_planes(builder, w_base, i, bits)
    else:
        tiles = chunk_tiles(builder, w_base, i, bits)
    k4_base = builder.mul(i, ir.Constant(_I64, CHUNK[bits][0]))
    words = [
        [
            builder.load(builder.gep(row, [builder.add(k4_base, ir.Constant(_I64, g))]), align=1)
            for g in range(len(tiles))
        ]
        for row in rows
    ]
    if bits == 8:
        new = _chunk_wide(builder, accs, tiles[0], words, signed=not codes)
    else:
        new = _chunk_bytes(builder, accs, tiles, words)
    i_next = builder.add(i, ir.Constant(_I64, 1))
    i.add_incoming(i_next, builder.block)
    for phi, val in zip(accs, new, strict=True):
        phi.add_incoming(val, builder.block)
    builder.cbranch(builder.icmp_signed("<", i_next, nchunks), loop, done)
    builder.position_at_end(done)
    if bits == 8:
        return [_fold(builder, new[4 * r : 4 * r + 4]) for r in range(len(rows))]
    cat = _mask(list(range(16)))
    return [builder.shuffle_vector(new[2 * r], new[2 * r + 1], cat) for r in range(len(rows))]


def _chunk_wide(
    builder: ir.IRBuilder,
    accs: list[ir.Value],
    tile: ir.Value,
    words: list[list[ir.Value]],
    signed: bool,
) -> list[ir.Value]:
    """8-bit weights: ``vpmaddwd`` pair sums of one chunk added to four accumulators a row."""
    new = list(accs)
    w16 = _weights(builder, tile, signed)
    for r, row_words in enumerate(words):
        x = _x_words(builder, row_words[0])
        for q in range(4):
            new[4 * r + q] = builder.add(new[4 * r + q], _madd(builder, x, w16[q]))
    return new


def _chunk_bytes(
    builder: ir.IRBuilder, accs: list[ir.Value], tiles: list[ir.Value], words: list[list[ir.Value]]
) -> list[ir.Value]:
    """Sub-byte weights: a chunk's ``vpmaddubsw`` sums in 16 bits, widened once (channels
    0-7 and 8-15 of a row in two accumulators)."""
    halves = [_mask(list(range(32 * h, 32 * h + 32))) for h in range(2)]
    tile_halves = [[builder.shuffle_vector(t, t, m) for m in halves] for t in tiles]
    new = list(accs)
    for r, row_words in enumerate(words):
        parts: list[ir.Value | None] = [None, None]
        for word, th in zip(row_words, tile_halves, strict=True):
            x4 = builder.bitcast(word, ir.VectorType(_I8, 4))
            xb = builder.shuffle_vector(x4, x4, _mask([0, 1, 2, 3] * 8))
            for h in range(2):
                m = _maddubs(builder, xb, th[h])
                part = parts[h]
                parts[h] = m if part is None else builder.add(part, m)
        for h in range(2):
            new[2 * r + h] = builder.add(new[2 * r + h], _madd(builder, parts[h], _ONES))
    return new


def accumulate(
    builder: ir.IRBuilder,
    a_ptr: ir.Value,
    w_ptr: ir.Value,
    ints: list[ir.Value],
    bits: int,
    rows: int,
    blocks: int = 1,
    codes: bool = False,
) -> list[ir.Value]:
    """:func:`kernels.codegen.microkernel.accumulate` for AVX2 (same arguments and sums).

    With ``codes`` (8 bits only) the sums are of ``x * (q + 128)``: the weights' codes
    widen straight from memory (``vpmovzxbw``, no subtraction and no lane extraction),
    and the caller subtracts ``128 * sum(x)`` of each row (:mod:`kernels.codegen.fused`).
    """
    w_off, nchunks = ints[3:5]
    row_ptrs = row_pointers(builder, a_ptr, ints, rows)
    sums: list[ir.Value] = []
    for c in range(blocks):
        w_base = builder.gep(w_ptr, [builder.add(w_off, ints[5]) if c else w_off])
        for r0 in range(0, rows, PASS_ROWS):
            rs = row_ptrs[r0 : r0 + PASS_ROWS]
            sums += _pass(builder, rs, w_base, nchunks, bits, codes and bits == 8)
    return sums


def _sum_bytes(
    builder: ir.IRBuilder, row: ir.Value, start: ir.Value, end: ir.Value, step: int, total: ir.Value
) -> ir.Value:
    """``total`` plus the bytes ``row[start:end]`` (i32), ``step`` bytes at a time (``end -
    start`` a multiple of it), each step a ``reduce.add`` of its bytes widened."""
    vty = ir.VectorType(_I32, step)
    red = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32, [vty]), f"llvm.vector.reduce.add.v{step}i32"
    )
    entry = builder.block
    loop = builder.append_basic_block(f"xsum{step}")
    done = builder.append_basic_block(f"xsum{step}_done")
    builder.cbranch(builder.icmp_signed("<", start, end), loop, done)
    builder.position_at_end(loop)
    j = builder.phi(_I64)
    j.add_incoming(start, entry)
    acc = builder.phi(_I32)
    acc.add_incoming(total, entry)
    ptr = builder.bitcast(builder.gep(row, [j]), ir.VectorType(_I8, step).as_pointer())
    acc_next = builder.add(acc, builder.call(red, [builder.zext(builder.load(ptr, align=1), vty)]))
    j_next = builder.add(j, ir.Constant(_I64, step))
    j.add_incoming(j_next, loop)
    acc.add_incoming(acc_next, loop)
    builder.cbranch(builder.icmp_signed("<", j_next, end), loop, done)
    builder.position_at_end(done)
    out = builder.phi(_I32)
    out.add_incoming(total, entry)
    out.add_incoming(acc_next, loop)
    return out


def _code_offsets_codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    a = context.make_array(sig.args[0])(context, builder, args[0]).data
    xsum = context.make_array(sig.args[5])(context, builder, args[5]).data
    stride, m0, m1, kp = (
        context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 2, 3, 4)
    )
    rows = builder.sub(m1, m0)
    entry = builder.block
    loop = builder.append_basic_block("xsum_rows")
    done = builder.append_basic_block("xsum_rows_done")
    builder.cbranch(builder.icmp_signed(">", rows, ir.Constant(_I64, 0)), loop, done)
    builder.position_at_end(loop)
    r = builder.phi(_I64)
    r.add_incoming(ir.Constant(_I64, 0), entry)
    row = builder.gep(a, [builder.mul(builder.add(m0, r), stride)])
    zero64, zero32 = ir.Constant(_I64, 0), ir.Constant(_I32, 0)
    whole = builder.mul(builder.ashr(kp, ir.Constant(_I64, 5)), ir.Constant(_I64, 32))
    total = _sum_bytes(builder, row, zero64, whole, 32, zero32)
    total = _sum_bytes(builder, row, whole, kp, 4, total)
    builder.store(builder.shl(total, ir.Constant(_I32, 7)), builder.gep(xsum, [r]))
    r_next = builder.add(r, ir.Constant(_I64, 1))
    r.add_incoming(r_next, builder.block)
    builder.cbranch(builder.icmp_signed("<", r_next, rows), loop, done)
    builder.position_at_end(done)


def _code_offsets_typer(
    typingctx: Any, a: Any, a_stride: Any, m0: Any, m1: Any, kp: Any, xsum: Any
) -> Any:
    """``code_offsets(a, a_stride, m0, m1, kp, xsum)``: ``xsum[r - m0] = 128 * sum(a[row
    r][:kp])`` (int32, wrapping) for rows ``m0 .. m1`` (row r at ``r * a_stride``; ``kp`` a
    multiple of 4): what the 8-bit tiles that sum the codes subtract (``vpsadbw`` on x86)."""
    if not (isinstance(a, types.Array) and a.dtype == types.uint8 and a.ndim == 1):
        return None
    if not (isinstance(xsum, types.Array) and xsum.dtype == types.int32 and xsum.ndim == 1):
        return None
    if not all(isinstance(t, types.Integer) for t in (a_stride, m0, m1, kp)):
        return None
    return types.void(a, a_stride, m0, m1, kp, xsum), _code_offsets_codegen


code_offsets: Any = intrinsic(_code_offsets_typer)
