"""Arrays without reference counts: numba intrinsics for the interpreter's hot path.

Every numba array carries a ``meminfo`` pointer, and every view or slice of it (a row of
a table, a sample's activations, a workspace region passed to a kernel) costs an atomic
increment and decrement of that count. Arrays whose memory someone else keeps alive for
the whole call need none of that: with a null ``meminfo`` numba's ``NRT_incref`` and
``NRT_decref`` return at once, and so do those of every view taken from such an array.

- ``unmanaged(a)``: ``a`` with a null ``meminfo`` (and ``parent``); the caller must keep
  ``a`` itself alive while the result is used (:func:`keep_alive`).
- ``array_at(addr, n, dtype)`` / ``matrix_at(addr, rows, cols, dtype)``: a C-contiguous
  1-D / 2-D array of ``dtype`` at a raw address (a model argument of the descriptor that
  :func:`kernels.plan.abi.descriptor` writes; the engine state holding it keeps it alive).
- ``f32_from_bits(v)``: the float32 whose bit pattern is the low 32 bits of ``v``.
- ``keep_alive(a)``: no code; a use of ``a`` that numba does not release before.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


def _unmanaged(typingctx: Any, a: Any) -> Any:
    """``a`` without its reference count (see the module docstring)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        src = make_array(a)(context, builder, args[0])
        dst = make_array(a)(context, builder)
        populate_array(
            dst,
            data=src.data,
            shape=src.shape,
            strides=src.strides,
            itemsize=src.itemsize,
            meminfo=None,
        )
        return dst._getvalue()

    return a(a), codegen


unmanaged: Any = intrinsic(_unmanaged)


def _at(context: Any, builder: ir.IRBuilder, arrty: Any, addr: Any, dims: list[Any]) -> Any:
    """An array struct of type ``arrty`` over ``dims`` (int64 values) at ``addr``."""
    ary = make_array(arrty)(context, builder)
    llty = context.get_data_type(arrty.dtype)
    itemsize = context.get_abi_sizeof(llty)
    intp = context.get_value_type(types.intp)
    strides = [ir.Constant(intp, itemsize)]
    for d in reversed(dims[1:]):  # C order: each stride is the next one times its extent
        strides.insert(0, builder.mul(strides[0], d))
    populate_array(
        ary,
        data=builder.inttoptr(addr, llty.as_pointer()),
        shape=dims,
        strides=strides,
        itemsize=itemsize,
        meminfo=None,
    )
    return ary._getvalue()


def _dims_ok(*values: Any) -> bool:
    return all(isinstance(v, types.Integer) for v in values)


def _array_at(typingctx: Any, addr: Any, n: Any, dtype: Any) -> Any:
    """A C-contiguous 1-D array of ``n`` items of ``dtype`` at address ``addr``."""
    if not (_dims_ok(addr, n) and isinstance(dtype, types.NumberClass)):
        return None
    arrty = types.Array(dtype.instance_type, 1, "C")

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        v = [context.cast(builder, args[i], sig.args[i], types.int64) for i in (0, 1)]
        return _at(context, builder, arrty, v[0], [v[1]])

    return arrty(addr, n, dtype), codegen


array_at: Any = intrinsic(_array_at)


def _matrix_at(typingctx: Any, addr: Any, rows: Any, cols: Any, dtype: Any) -> Any:
    """A C-contiguous ``(rows, cols)`` array of ``dtype`` at address ``addr``."""
    if not (_dims_ok(addr, rows, cols) and isinstance(dtype, types.NumberClass)):
        return None
    arrty = types.Array(dtype.instance_type, 2, "C")

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        v = [context.cast(builder, args[i], sig.args[i], types.int64) for i in (0, 1, 2)]
        return _at(context, builder, arrty, v[0], v[1:])

    return arrty(addr, rows, cols, dtype), codegen


matrix_at: Any = intrinsic(_matrix_at)


def _f32_from_bits(typingctx: Any, v: Any) -> Any:
    """The float32 whose bits are the low 32 bits of the integer ``v``."""
    if not isinstance(v, types.Integer):
        return None

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        low = builder.trunc(context.cast(builder, args[0], v, types.int64), ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(v), codegen


f32_from_bits: Any = intrinsic(_f32_from_bits)


def _keep_alive(typingctx: Any, a: Any) -> Any:
    """Nothing; a use of ``a`` (numba releases a variable after its last use)."""

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        return context.get_dummy_value()

    return types.none(a), codegen


keep_alive: Any = intrinsic(_keep_alive)
