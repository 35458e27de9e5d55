"""Column sums of 16 uint8 channels over many positions, in one vector register (LLVM IR).

``colsum16(src, off, stride, count, init, dst, d, n)`` adds ``src[off + p * stride + j]``
over ``p < count`` to ``init`` in int32 lane ``j < 16`` and writes the first ``n`` lanes to
``dst[d:]`` (the others are left unchanged). The sums stay in a register for the whole
loop; numba's loop over positions and channels kept them in ``dst`` and reloaded each one
after its store (a store-to-load forwarding wait per position). ``src`` needs 16 readable
bytes at every row's offset (activation buffers have slack).
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from kernels.codegen.epilogue import lane_mask, splat32

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16I8 = ir.VectorType(_I8, 16)
_V16I32 = ir.VectorType(_I32, 16)
_INTS = (1, 2, 3, 4, 6, 7)


def _codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
    src = context.make_array(sig.args[0])(context, builder, args[0]).data
    dst = context.make_array(sig.args[5])(context, builder, args[5]).data
    off, stride, count, init, d, n = (
        context.cast(builder, args[i], sig.args[i], types.int64) for i in _INTS
    )
    start = splat32(builder, builder.trunc(init, _I32))
    entry = builder.block
    loop = builder.append_basic_block("colsum_loop")
    done = builder.append_basic_block("colsum_done")
    zero = ir.Constant(_I64, 0)
    builder.cbranch(builder.icmp_signed(">", count, zero), loop, done)
    builder.position_at_end(loop)
    p = builder.phi(_I64)
    p.add_incoming(zero, entry)
    acc = builder.phi(_V16I32)
    acc.add_incoming(start, entry)
    at = builder.add(off, builder.mul(p, stride))
    row = builder.load(builder.bitcast(builder.gep(src, [at]), _V16I8.as_pointer()), align=1)
    new = builder.add(acc, builder.zext(row, _V16I32))
    p_next = builder.add(p, ir.Constant(_I64, 1))
    p.add_incoming(p_next, loop)
    acc.add_incoming(new, loop)
    builder.cbranch(builder.icmp_signed("<", p_next, count), loop, done)
    builder.position_at_end(done)
    total = builder.phi(_V16I32)
    total.add_incoming(start, entry)
    total.add_incoming(new, loop)
    ptr = builder.bitcast(builder.gep(dst, [d]), _V16I32.as_pointer())
    old = builder.load(ptr, align=1)
    builder.store(builder.select(lane_mask(builder, n), total, old), ptr, align=1)


def _typer(
    typingctx: Any,
    src: Any,
    off: Any,
    stride: Any,
    count: Any,
    init: Any,
    dst: Any,
    d: Any,
    n: Any,
) -> Any:
    """Typing of :data:`colsum16` (see the module docstring)."""
    sig_args = (src, off, stride, count, init, dst, d, n)
    arrays = ((src, types.uint8), (dst, types.int32))
    if not all(isinstance(t, types.Array) and t.ndim == 1 and t.dtype == dt for t, dt in arrays):
        return None
    if not all(isinstance(sig_args[i], types.Integer) for i in _INTS):
        return None
    return types.void(*sig_args), _codegen


colsum16: Any = intrinsic(_typer)
