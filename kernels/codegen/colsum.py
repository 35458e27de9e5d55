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
from kernels.codegen.unpack import counted_loop

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
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

    def add_row(p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        at = builder.add(off, builder.mul(p, stride))
        ptr = builder.bitcast(builder.gep(src, [at]), _V16I8.as_pointer())
        return [builder.add(acc[0], builder.zext(builder.load(ptr, align=1), _V16I32))]

    (total,) = counted_loop(builder, count, [start], add_row, "colsum")
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
