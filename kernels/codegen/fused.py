"""Micro-kernel with the requantizing store fused in registers (hidden layers' GEMM tiles).

``tile_requant_kernel()`` returns an intrinsic

    mkq(bits, rows, blocks, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step,
        bias, m0, shift, c0, zo, lo, hi, tgt, t0, valid, o0, n, n2, premax, xsum, out) -> None

that branches (one LLVM ``switch``) to the variant for ``bits`` (2, 3, 4, 8), ``rows``
(8, 4, 1) and ``blocks`` (1, 2; other combinations do nothing) and computes the int32
sums of ``rows`` activation rows by ``blocks`` blocks of 16 output channels exactly as
:func:`kernels.codegen.microkernel.tile_kernel` does. Then, without leaving registers, it
requantizes them with the parameters of channels ``c0 ..`` (loaded and converted once per
tile, not once per row: :mod:`kernels.codegen.epilogue`) and stores row ``r < valid`` to
its target ``g = tgt[t0 + r]`` (:func:`kernels.codegen.store._targets`; ``g < 0``:
dropped): block ``c``'s codes go to ``out[(g >> 1) + o0 + 16 c:]``, its first ``n``
(block 0) or ``n2`` (block 1) lanes, stored if ``g & 1`` (first position of a pooling
window) and max-ed with the code there otherwise. Max-pooling the codes is exact for any
sums: requantization is monotone in the int32 value it is given. With ``premax`` (the
layer's sums never wrap) two rows bound for one pooling cell are max-ed as int32 sums and
requantized once. On AVX2 with 8-bit weights the tiles sum ``x * (q + 128)`` (the codes
widen straight from memory) and row ``r``'s ``xsum[t0 + r]``, which the caller sets to
``128 * sum(x)`` over the row's padded inputs, is subtracted (mod 2^32: exact); elsewhere
``xsum`` is not read.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from kernels.codegen.epilogue import lane_mask, load_params, put_codes, requant_codes, splat32
from kernels.codegen.isa import ACTIVE_ISA
from kernels.codegen.microkernel import accumulate
from kernels.plan.layout import CHUNK

_I64 = ir.IntType(64)
_ROWS = (8, 4, 1)
#: argument names in order; arrays with their element types, the rest are integers
_NAMES = (
    "bits",
    "rows",
    "blocks",
    "a",
    "a_off",
    "a_stride",
    "a_last",
    "w",
    "w_off",
    "nchunks",
    "w_step",
    "bias",
    "m0",
    "shift",
    "c0",
    "zo",
    "lo",
    "hi",
    "tgt",
    "t0",
    "valid",
    "o0",
    "n",
    "n2",
    "premax",
    "xsum",
    "out",
)
_ARRAYS = {
    "a": types.uint8,
    "w": types.uint8,
    "bias": types.int32,
    "m0": types.int32,
    "shift": types.int32,
    "tgt": types.int64,
    "xsum": types.int32,
    "out": types.uint8,
}


def _store_if(
    builder: ir.IRBuilder,
    ptr: dict[str, ir.Value],
    val: dict[str, ir.Value],
    g: ir.Value,
    codes: list[ir.Value],
    masks: list[ir.Value],
) -> None:
    """Store one row's codes (a list over blocks) to target ``g`` unless ``g < 0``."""
    zero = ir.Constant(_I64, 0)
    one = ir.Constant(_I64, 1)
    store_bb = builder.append_basic_block("mkq_store")
    after_bb = builder.append_basic_block("mkq_stored")
    builder.cbranch(builder.icmp_signed(">=", g, zero), store_bb, after_bb)
    builder.position_at_end(store_bb)
    first = builder.icmp_signed("!=", builder.and_(g, one), zero)
    base = builder.add(builder.ashr(g, one), val["o0"])
    for c, (y8, mask) in enumerate(zip(codes, masks, strict=True)):
        d = builder.add(base, ir.Constant(_I64, 16 * c))
        put_codes(builder, ptr["out"], d, y8, first, mask)
    builder.branch(after_bb)
    builder.position_at_end(after_bb)


def _variant(
    builder: ir.IRBuilder,
    ptr: dict[str, ir.Value],
    val: dict[str, ir.Value],
    bits: int,
    rows: int,
    blocks: int,
    isa: str,
) -> None:
    """One tile: sums, requantization, stores; leaves the builder in its last block.

    Rows go in pairs: where both land in one pooling cell and ``premax`` says the layer's
    sums never wrap (requantization is then monotone in them), their lane-wise int32 max is
    requantized once (fused max pooling at half the epilogue work); else each row alone.
    """
    ints = [val[k] for k in ("a_off", "a_stride", "a_last", "w_off", "nchunks", "w_step")]
    offset_codes = uses_codes(isa, bits)
    sums = accumulate(builder, ptr["a"], ptr["w"], ints, bits, rows, isa, blocks, offset_codes)
    if offset_codes:  # sums of x * (q + 128): subtract each row's 128 * sum(x)
        for r in range(rows):
            at = builder.gep(ptr["xsum"], [builder.add(val["t0"], ir.Constant(_I64, r))])
            off = splat32(builder, builder.load(at))
            for c in range(blocks):
                sums[r + rows * c] = builder.sub(sums[r + rows * c], off)
    prms = []
    masks = []
    for c in range(blocks):
        c0 = builder.add(val["c0"], ir.Constant(_I64, 16 * c))
        prms.append(
            load_params(
                builder, ptr["bias"], ptr["m0"], ptr["shift"], c0, val["zo"], val["lo"], val["hi"]
            )
        )
        masks.append(lane_mask(builder, val["n"] if c == 0 else val["n2"]))

    def codes(vals: list[ir.Value]) -> list[ir.Value]:
        return [requant_codes(builder, v, prm) for v, prm in zip(vals, prms, strict=True)]

    def row(r: int) -> list[ir.Value]:
        return [sums[r + rows * c] for c in range(blocks)]

    def target(r: ir.Value) -> ir.Value:
        return builder.load(builder.gep(ptr["tgt"], [builder.add(val["t0"], r)]))

    end = builder.append_basic_block("mkq_end")
    zero = ir.Constant(_I64, 0)
    one = ir.Constant(_I64, 1)
    premax = builder.icmp_signed("!=", val["premax"], zero)
    for r in range(0, rows, 2):
        head_bb = builder.append_basic_block(f"mkq_row{r}")
        next_bb = builder.append_basic_block(f"mkq_next{r}")
        builder.cbranch(builder.icmp_signed("<", ir.Constant(_I64, r), val["valid"]), head_bb, end)
        builder.position_at_end(head_bb)
        g0 = target(ir.Constant(_I64, r))
        if r + 1 == rows:
            _store_if(builder, ptr, val, g0, codes(row(r)), masks)
            builder.branch(next_bb)
            builder.position_at_end(next_bb)
            continue
        has1 = builder.icmp_signed("<", ir.Constant(_I64, r + 1), val["valid"])
        g1 = target(builder.select(has1, ir.Constant(_I64, r + 1), ir.Constant(_I64, r)))
        g1 = builder.select(has1, g1, ir.Constant(_I64, -1))
        same = builder.and_(
            builder.and_(premax, builder.icmp_signed(">=", g1, zero)),
            builder.and_(
                builder.icmp_signed(">=", g0, zero),
                builder.icmp_signed("==", builder.ashr(g0, one), builder.ashr(g1, one)),
            ),
        )
        pair_bb = builder.append_basic_block(f"mkq_pair{r}")
        single_bb = builder.append_basic_block(f"mkq_single{r}")
        builder.cbranch(same, pair_bb, single_bb)
        builder.position_at_end(pair_bb)
        top = [
            builder.select(builder.icmp_signed(">", a, b), a, b)
            for a, b in zip(row(r), row(r + 1), strict=True)
        ]
        _store_if(builder, ptr, val, g0, codes(top), masks)
        builder.branch(next_bb)
        builder.position_at_end(single_bb)
        _store_if(builder, ptr, val, g0, codes(row(r)), masks)
        _store_if(builder, ptr, val, g1, codes(row(r + 1)), masks)
        builder.branch(next_bb)
        builder.position_at_end(next_bb)
    builder.branch(end)
    builder.position_at_end(end)


def uses_codes(isa: str, bits: int) -> bool:
    """Whether the tiles sum ``x * (q + 128)`` and need ``xsum`` (AVX2, 8-bit weights)."""
    return isa == "avx2" and bits == 8


def _key(bits: int, rows: int, blocks: int) -> int:
    return bits * 100 + rows * 10 + blocks


def _codegen(isa: str) -> Any:
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> None:
        ptr, val = {}, {}
        for name, t, v in zip(_NAMES, sig.args, args, strict=True):
            if name in _ARRAYS:
                ptr[name] = context.make_array(t)(context, builder, v).data
            else:
                val[name] = context.cast(builder, v, t, types.int64)
        key = builder.add(
            builder.add(
                builder.mul(val["bits"], ir.Constant(_I64, 100)),
                builder.mul(val["rows"], ir.Constant(_I64, 10)),
            ),
            val["blocks"],
        )
        done = builder.append_basic_block("mkq_done")
        switch = builder.switch(key, done)
        for bits in CHUNK:
            for rows in _ROWS:
                for blocks in (1, 2):
                    bb = builder.append_basic_block(f"mkq_{bits}b{rows}r{blocks}")
                    switch.add_case(ir.Constant(_I64, _key(bits, rows, blocks)), bb)
                    builder.position_at_end(bb)
                    _variant(builder, ptr, val, bits, rows, blocks, isa)
                    builder.branch(done)
        builder.position_at_end(done)

    return codegen


def tile_requant_kernel(isa: str = ACTIVE_ISA) -> Any:
    """The fused micro-kernel intrinsic (see the module docstring)."""
    codegen = _codegen(isa)

    def typer(
        typingctx: Any,
        bits: Any,
        rows: Any,
        blocks: Any,
        a: Any,
        a_off: Any,
        a_stride: Any,
        a_last: Any,
        w: Any,
        w_off: Any,
        nchunks: Any,
        w_step: Any,
        bias: Any,
        m0: Any,
        shift: Any,
        c0: Any,
        zo: Any,
        lo: Any,
        hi: Any,
        tgt: Any,
        t0: Any,
        valid: Any,
        o0: Any,
        n: Any,
        n2: Any,
        premax: Any,
        xsum: Any,
        out: Any,
    ) -> Any:
        sig_args: tuple[Any, ...] = (bits, rows, blocks, a, a_off, a_stride, a_last, w, w_off)
        sig_args += (nchunks, w_step, bias, m0, shift, c0, zo, lo, hi, tgt, t0, valid, o0, n)
        sig_args += (n2, premax, xsum, out)
        for name, t in zip(_NAMES, sig_args, strict=True):
            if name in _ARRAYS:
                if not (isinstance(t, types.Array) and t.ndim == 1 and t.dtype == _ARRAYS[name]):
                    return None
            elif not isinstance(t, types.Integer):
                return None
        return types.void(*sig_args), codegen

    typer.__name__ = f"tile_requant_{isa}"
    return intrinsic(typer)
