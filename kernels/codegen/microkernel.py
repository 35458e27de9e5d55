"""Dot-product micro-kernels, written as numba intrinsics in LLVM IR.

``tile_kernel(bits, rows)`` returns an intrinsic

    mk(acc, a, a_off, a_stride, a_last, w, w_off, nchunks) -> None

that computes, for ``rows`` activation rows and one block of 16 output channels, the
exact int32 sums ``acc[16*r + o] = sum_k a[row_r + k] * q[o, k]`` over ``nchunks``
panel chunks (see :mod:`kernels.plan.layout`). Row ``r`` starts at
``a_off + min(r, a_last) * a_stride`` of the uint8 array ``a`` (rows past ``a_last``
repeat the last one, so a partial block reads only valid rows); ``w_off`` is the byte
offset of the block's first chunk in the uint8 panel ``w``. Sums wrap modulo 2^32.
``tile_kernel_wide(bits, rows)`` does the same for two blocks at once (each broadcast
activation word feeds two dot products).

The accumulators live in vector registers for the whole reduction. Weight chunks are
unpacked in registers (mask, shift, subtract the code offset), never in memory. The
4-way u8 x s8 dot product is ``vpdpbusd`` on AVX-512 VNNI, ``sdot`` on AArch64 with the
dot-product extension (s8 x s8: activation bytes are xor-ed with 0x80, i.e. ``x - 128``,
so the sums are ``sum (x - 128) * q``; the caller folds ``128 * rowsum(q)`` into the bias)
and plain vector IR (widen, multiply, add neighbours) elsewhere; :mod:`kernels.codegen.isa`
decides which.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.codegen import madd
from kernels.codegen.isa import ACTIVE_ISA
from kernels.codegen.unpack import chunk_tiles, counted_loop, row_pointers
from kernels.plan.layout import CHUNK
from kernels.plan.targets import ISAS, SIGNED_ACTIVATIONS

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, 16)
_V64I32 = ir.VectorType(_I32, 64)


def _dot_vnni(builder: ir.IRBuilder, acc: ir.Value, x: ir.Value, w: ir.Value) -> ir.Value:
    fnty = ir.FunctionType(_V16I32, [_V16I32, _V16I32, _V16I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(fn, [acc, x, builder.bitcast(w, _V16I32)])


def _dot_generic(builder: ir.IRBuilder, acc: ir.Value, x: ir.Value, w: ir.Value) -> ir.Value:
    xw = builder.zext(builder.bitcast(x, _V64I8), _V64I32)
    ww = builder.sext(w, _V64I32)
    prod = builder.mul(xw, ww)
    out = acc
    for j in range(4):
        mask = ir.Constant(ir.VectorType(_I32, 16), [4 * i + j for i in range(16)])
        out = builder.add(out, builder.shuffle_vector(prod, prod, mask))
    return out


def _dot_sdot(builder: ir.IRBuilder, acc: ir.Value, x: ir.Value, w: ir.Value) -> ir.Value:
    """``acc[o] += sum_j x_j * w[4o + j]`` with four ``sdot`` on 128-bit quarters."""
    v4i32 = ir.VectorType(_I32, 4)
    v16i8 = ir.VectorType(_I8, 16)
    fnty = ir.FunctionType(v4i32, [v4i32, v16i8, v16i8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.aarch64.neon.sdot.v4i32.v16i8")
    xb = builder.bitcast(x, _V64I8)
    x16 = builder.shuffle_vector(xb, xb, ir.Constant(ir.VectorType(_I32, 16), list(range(16))))
    parts = []
    for g in range(4):
        lanes = ir.Constant(ir.VectorType(_I32, 4), [4 * g + i for i in range(4)])
        bytes_ = ir.Constant(ir.VectorType(_I32, 16), [16 * g + i for i in range(16)])
        part = builder.shuffle_vector(acc, acc, lanes)
        parts.append(builder.call(fn, [part, x16, builder.shuffle_vector(w, w, bytes_)]))
    low = builder.shuffle_vector(
        parts[0], parts[1], ir.Constant(ir.VectorType(_I32, 8), list(range(8)))
    )
    high = builder.shuffle_vector(
        parts[2], parts[3], ir.Constant(ir.VectorType(_I32, 8), list(range(8)))
    )
    return builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(_I32, 16), list(range(16))))


_DOT = {"avx512vnni": _dot_vnni, "neon-sdot": _dot_sdot, "generic": _dot_generic}


#: independent accumulator chains a reduction loop keeps at least (the dot product's
#: latency over its throughput, about 4 on Zen 4): a 1-row tile splits its chunks over
#: several sets of accumulators, added after the loop
MIN_CHAINS = 4


def _dot_chunk(
    builder: ir.IRBuilder,
    i: ir.Value,
    row_ptrs: list[ir.Value],
    w_bases: list[ir.Value],
    accs: list[ir.Value],
    bits: int,
    isa: str,
) -> list[ir.Value]:
    """``accs`` (row ``r``, block ``c`` at ``r + rows * c``) plus the products of chunk ``i``."""
    tiles_per_chunk = CHUNK[bits][0]
    dot = _DOT[isa]
    rows = len(row_ptrs)
    block_tiles = [chunk_tiles(builder, w_base, i, bits) for w_base in w_bases]
    new = list(accs)
    k4_base = builder.mul(i, ir.Constant(_I64, tiles_per_chunk))
    for g in range(tiles_per_chunk):
        k4 = builder.add(k4_base, ir.Constant(_I64, g))
        for r in range(rows):
            word = builder.load(builder.gep(row_ptrs[r], [k4]), align=1)
            if isa in SIGNED_ACTIVATIONS:
                word = builder.xor(word, ir.Constant(_I32, 0x80808080))
            vec = builder.insert_element(ir.Constant(_V16I32, None), word, ir.Constant(_I32, 0))
            xb = builder.shuffle_vector(vec, vec, ir.Constant(_V16I32, [0] * 16))
            for c, tiles in enumerate(block_tiles):
                new[r + rows * c] = dot(builder, new[r + rows * c], xb, tiles[g])
    return new


def accumulate(
    builder: ir.IRBuilder,
    a_ptr: ir.Value,
    w_ptr: ir.Value,
    ints: list[ir.Value],
    bits: int,
    rows: int,
    isa: str,
    blocks: int = 1,
    codes: bool = False,
) -> list[ir.Value]:
    """Emit the reduction loop; the int32 sums of row ``r``, block ``c`` at ``r + rows * c``.

    ``ints`` are i64 ``a_off, a_stride, a_last, w_off, nchunks`` and, for two blocks,
    ``w_step``. The builder is left after the loop, the sums in registers. ``codes``: sums
    of the 8-bit codes ``q + 128`` instead of ``q`` (AVX2 only, see
    :func:`kernels.codegen.madd.accumulate`). Tiles with fewer than :data:`MIN_CHAINS`
    accumulators run ``sets`` chunks per iteration into as many sets of accumulators (a
    tail loop takes the last ``nchunks % sets`` into the first), so that consecutive dot
    products do not wait for each other.
    """
    if isa == "avx2":
        return madd.accumulate(builder, a_ptr, w_ptr, ints, bits, rows, blocks, codes)
    if codes:
        raise ValueError(f"sums of codes are an AVX2 path, not {isa!r}")
    w_off, nchunks = ints[3:5]
    row_ptrs = row_pointers(builder, a_ptr, ints, rows)
    w_bases = [builder.gep(w_ptr, [w_off])]
    if blocks == 2:
        w_bases.append(builder.gep(w_ptr, [builder.add(w_off, ints[5])]))
    n = rows * blocks
    sets = -(-MIN_CHAINS // n)
    zero = ir.Constant(_V16I32, None)

    def step(m: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
        base = builder.mul(m, ir.Constant(_I64, sets))
        for u in range(sets):
            i = builder.add(base, ir.Constant(_I64, u))
            part = _dot_chunk(builder, i, row_ptrs, w_bases, accs[u * n : (u + 1) * n], bits, isa)
            accs[u * n : (u + 1) * n] = part
        return accs

    if sets == 1:
        return counted_loop(builder, nchunks, [zero] * n, step, "mk")
    full = builder.sdiv(nchunks, ir.Constant(_I64, sets))
    accs = counted_loop(builder, full, [zero] * (n * sets), step, "mk")
    start = builder.mul(full, ir.Constant(_I64, sets))

    def tail(m: ir.Value, first: list[ir.Value]) -> list[ir.Value]:
        i = builder.add(start, m)
        return _dot_chunk(builder, i, row_ptrs, w_bases, first, bits, isa)

    sums = counted_loop(builder, builder.sub(nchunks, start), accs[:n], tail, "mk_tail")
    for u in range(1, sets):
        sums = [builder.add(a, b) for a, b in zip(sums, accs[u * n : (u + 1) * n], strict=True)]
    return sums


def _codegen(bits: int, rows: int, isa: str, blocks: int = 1) -> Any:
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
        acc_t, a_t, w_t = sig.args[0], sig.args[1], sig.args[5]
        acc_ptr = context.make_array(acc_t)(context, builder, args[0]).data
        a_ptr = context.make_array(a_t)(context, builder, args[1]).data
        w_ptr = context.make_array(w_t)(context, builder, args[5]).data
        ints = _int_args(context, builder, sig, args)
        if blocks == 2:
            ints.append(context.cast(builder, args[8], sig.args[8], types.int64))
        new = accumulate(builder, a_ptr, w_ptr, ints, bits, rows, isa, blocks)
        out = builder.bitcast(acc_ptr, _V16I32.as_pointer())
        for r in range(rows * blocks):
            builder.store(new[r], builder.gep(out, [ir.Constant(_I64, r)]), align=4)

    return codegen


def _int_args(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> list[ir.Value]:
    """The integer arguments (a_off, a_stride, a_last, w_off, nchunks) as i64."""
    return [context.cast(builder, args[n], sig.args[n], types.int64) for n in (2, 3, 4, 6, 7)]


def tile_kernel(bits: int, rows: int, isa: str = ACTIVE_ISA) -> Any:
    """The micro-kernel intrinsic for ``bits``-bit panels and ``rows`` activation rows."""
    if bits not in CHUNK:
        raise ValueError(f"no micro-kernel for {bits}-bit weights")
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}")
    codegen = _codegen(bits, rows, isa)

    def typer(
        typingctx: Any,
        acc: Any,
        a: Any,
        a_off: Any,
        a_stride: Any,
        a_last: Any,
        w: Any,
        w_off: Any,
        nchunks: Any,
    ) -> Any:
        arrays = (acc, a, w)
        if not all(isinstance(t, types.Array) and t.ndim == 1 for t in arrays):
            return None
        if (acc.dtype, a.dtype, w.dtype) != (types.int32, types.uint8, types.uint8):
            return None
        if not all(isinstance(t, types.Integer) for t in (a_off, a_stride, a_last, w_off, nchunks)):
            return None
        return types.void(acc, a, a_off, a_stride, a_last, w, w_off, nchunks), codegen

    typer.__name__ = f"tile_kernel_{bits}b_{rows}r_{isa}"
    return intrinsic(typer)


def tile_kernel_wide(bits: int, rows: int, isa: str = ACTIVE_ISA) -> Any:
    """Like :func:`tile_kernel` for two blocks of 16 output channels at once.

    ``mk(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step)``: the second block's
    chunks start ``w_step`` bytes after the first's; its sums go to ``acc[16 * rows:]``.
    Each broadcast activation word feeds two dot products.
    """
    if bits not in CHUNK:
        raise ValueError(f"no micro-kernel for {bits}-bit weights")
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}")
    codegen = _codegen(bits, rows, isa, blocks=2)

    def typer(
        typingctx: Any,
        acc: Any,
        a: Any,
        a_off: Any,
        a_stride: Any,
        a_last: Any,
        w: Any,
        w_off: Any,
        nchunks: Any,
        w_step: Any,
    ) -> Any:
        arrays = (acc, a, w)
        if not all(isinstance(t, types.Array) and t.ndim == 1 for t in arrays):
            return None
        if (acc.dtype, a.dtype, w.dtype) != (types.int32, types.uint8, types.uint8):
            return None
        ints = (a_off, a_stride, a_last, w_off, nchunks, w_step)
        if not all(isinstance(t, types.Integer) for t in ints):
            return None
        return types.void(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step), codegen

    typer.__name__ = f"tile_kernel_wide_{bits}b_{rows}r_{isa}"
    return intrinsic(typer)
