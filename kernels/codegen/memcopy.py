"""``copy_bytes(dst, d, src, s, n)``: ``dst[d:d + n] = src[s:s + n]`` without array views.

A slice assignment in numba makes two array views, and each costs an atomic
reference-count increment and decrement; for the short rows that im2col gathers (a few
channels times the kernel width) those pairs cost more than the copy. This intrinsic
emits ``llvm.memcpy`` on the two data pointers instead. The ranges must not overlap
(im2col reads one buffer and writes another).

``copy_blocks(dst, d, src, s, n)`` copies whole 64-byte blocks, ``ceil(n / 64) * 64``
bytes: one vector load and store per block and no call (``llvm.memcpy`` of a run-time
length is a libc call, whose overhead dominated copies of a few dozen bytes). Both arrays
need that much room past the range; the bytes past ``n`` are overwritten.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I64 = ir.IntType(64)


def _codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    dst = context.make_array(sig.args[0])(context, builder, args[0]).data
    src = context.make_array(sig.args[2])(context, builder, args[2]).data
    d, s, n = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 3, 4))
    cgutils.raw_memcpy(builder, builder.gep(dst, [d]), builder.gep(src, [s]), n, 1)


def _typer(typingctx: Any, dst: Any, d: Any, src: Any, s: Any, n: Any) -> Any:
    """Typing of :data:`copy_bytes`: two 1-D uint8 arrays and three integers."""
    for t in (dst, src):
        if not (isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.uint8):
            return None
    if not all(isinstance(t, types.Integer) for t in (d, s, n)):
        return None
    return types.void(dst, d, src, s, n), _codegen


copy_bytes: Any = intrinsic(_typer)

_BLOCK = 64
_V = ir.VectorType(ir.IntType(8), _BLOCK)


def _codegen_blocks(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    dst = context.make_array(sig.args[0])(context, builder, args[0]).data
    src = context.make_array(sig.args[2])(context, builder, args[2]).data
    d, s, n = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 3, 4))
    dst, src = builder.gep(dst, [d]), builder.gep(src, [s])
    entry = builder.block
    loop = builder.append_basic_block("blocks")
    done = builder.append_basic_block("blocks_done")
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(_I64, 0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(ir.Constant(_I64, 0), entry)
    block = builder.load(builder.bitcast(builder.gep(src, [i]), _V.as_pointer()), align=1)
    builder.store(block, builder.bitcast(builder.gep(dst, [i]), _V.as_pointer()), align=1)
    i_next = builder.add(i, ir.Constant(_I64, _BLOCK))
    i.add_incoming(i_next, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)


def _typer_blocks(typingctx: Any, dst: Any, d: Any, src: Any, s: Any, n: Any) -> Any:
    """Typing of :data:`copy_blocks`: as :data:`copy_bytes`."""
    result = _typer(typingctx, dst, d, src, s, n)
    return None if result is None else (result[0], _codegen_blocks)


copy_blocks: Any = intrinsic(_typer_blocks)
