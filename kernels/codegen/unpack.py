"""LLVM IR shared by the micro-kernels: activation row pointers and weight chunks unpacked.

Every instruction set reads a panel chunk the same way (:mod:`kernels.plan.layout`): its
64-byte planes are loaded and unpacked in registers (mask, shift, subtract the code
offset) into signed int8 tiles of 16 output channels by 4 inputs, byte ``4*o + j``.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir

from kernels.plan.layout import CHUNK

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
V64I8 = ir.VectorType(_I8, 64)


def splat8(value: int) -> ir.Constant:
    """<64 x i8> of ``value``."""
    return ir.Constant(V64I8, [value] * 64)


def unpack(builder: ir.IRBuilder, planes: list[ir.Value], bits: int) -> list[ir.Value]:
    """Signed int8 tiles (as <64 x i8>) of one chunk, given its 64-byte planes."""
    if bits == 8:
        return [builder.sub(planes[0], splat8(128))]
    offset = splat8(1 << (bits - 1))
    tiles = []
    if bits in (4, 2):
        mask = splat8((1 << bits) - 1)
        for g in range(8 // bits):
            field = builder.lshr(planes[0], splat8(g * bits)) if g else planes[0]
            tiles.append(builder.sub(builder.and_(field, mask), offset))
        return tiles
    three = splat8(3)
    one = splat8(1)
    for g in range(8):
        low = planes[g // 4]
        low = builder.lshr(low, splat8(2 * (g % 4))) if g % 4 else low
        high = builder.lshr(planes[2], splat8(g)) if g else planes[2]
        high = builder.shl(builder.and_(high, one), splat8(2))
        tiles.append(builder.sub(builder.or_(builder.and_(low, three), high), offset))
    return tiles


def chunk_planes(builder: ir.IRBuilder, w_base: ir.Value, i: ir.Value, bits: int) -> list[ir.Value]:
    """The packed 64-byte planes (<64 x i8>) of chunk ``i`` (i64) of the block at ``w_base``."""
    chunk_bytes = CHUNK[bits][1]
    chunk_ptr = builder.gep(w_base, [builder.mul(i, ir.Constant(_I64, chunk_bytes))])
    planes = []
    for p in range(chunk_bytes // 64):
        ptr = builder.gep(chunk_ptr, [ir.Constant(_I64, 64 * p)])
        planes.append(builder.load(builder.bitcast(ptr, V64I8.as_pointer()), align=1))
    return planes


def chunk_tiles(builder: ir.IRBuilder, w_base: ir.Value, i: ir.Value, bits: int) -> list[ir.Value]:
    """The unpacked tiles of chunk ``i`` (i64) of the block starting at ``w_base`` (i8*)."""
    return unpack(builder, chunk_planes(builder, w_base, i, bits), bits)


def row_pointers(
    builder: ir.IRBuilder, a_ptr: ir.Value, ints: list[ir.Value], rows: int
) -> list[ir.Value]:
    """i32* of ``rows`` activation rows; ``ints`` start ``a_off, a_stride, a_last`` (i64).

    Rows past ``a_last`` repeat the last one, so a partial block reads only valid rows.
    """
    a_off, a_stride, a_last = ints[:3]
    ptrs = []
    for r in range(rows):
        below = builder.icmp_signed("<", ir.Constant(_I64, r), a_last)
        idx = builder.select(below, ir.Constant(_I64, r), a_last)
        off = builder.add(a_off, builder.mul(idx, a_stride))
        ptrs.append(builder.bitcast(builder.gep(a_ptr, [off]), _I32.as_pointer()))
    return ptrs


def counted_loop(
    builder: ir.IRBuilder,
    count: ir.Value,
    init: list[ir.Value],
    body: Any,
    name: str,
) -> list[ir.Value]:
    """``for m in range(count): vals = body(m, vals)`` (none if ``count <= 0``); the last."""
    entry = builder.block
    loop = builder.append_basic_block(f"{name}_loop")
    done = builder.append_basic_block(f"{name}_done")
    zero = ir.Constant(_I64, 0)
    builder.cbranch(builder.icmp_signed(">", count, zero), loop, done)
    builder.position_at_end(loop)
    m = builder.phi(_I64)
    m.add_incoming(zero, entry)
    phis = []
    for v in init:
        phi = builder.phi(v.type)
        phi.add_incoming(v, entry)
        phis.append(phi)
    new = body(m, list(phis))
    m_next = builder.add(m, ir.Constant(_I64, 1))
    last = builder.block
    m.add_incoming(m_next, last)
    for phi, val in zip(phis, new, strict=True):
        phi.add_incoming(val, last)
    builder.cbranch(builder.icmp_signed("<", m_next, count), loop, done)
    builder.position_at_end(done)
    outs = []
    for v, val in zip(init, new, strict=True):
        out = builder.phi(v.type)
        out.add_incoming(v, entry)
        out.add_incoming(val, last)
        outs.append(out)
    return outs
