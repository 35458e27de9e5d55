"""The whole-model interpreter: one compiled call runs every layer of every sample.

A model is an op table and a tensor-layout table (see :mod:`kernels.plan.program`; columns in
:mod:`kernels.plan.tables`) plus flat weight arrays. The batch goes through the layers in chunks
of up to ``sizes[S_CHUNK]`` samples: every weighted layer is one GEMM over the rows of all
samples of the chunk, and its epilogue writes straight into the next layer's (padded) input
layout. All scratch memory is carved from the caller's workspace (``sizes[W_*]``), so a
call allocates nothing; an empty workspace makes the call allocate its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.codegen.gemm import gemm_rows
from kernels.codegen.jit import inline_kernel, kernel
from kernels.codegen.linear import linear_i32
from kernels.codegen.ops import avg_pool, global_sum, im2col, max_pool, quantize_input
from kernels.codegen.raw import array_at, f32_from_bits, keep_alive, matrix_at, unmanaged
from kernels.plan.abi import slot
from kernels.plan.tables import (
    ALIGN,
    F_IN,
    F_KH,
    F_KW,
    F_LAST,
    F_LAYER,
    F_MAP,
    F_OH,
    F_OP,
    F_OUT,
    F_OW,
    F_SH,
    F_SW,
    F_ZP,
    L_BITS,
    L_K,
    L_KP,
    L_LO,
    L_OUT,
    L_OUTZP,
    L_P0,
    L_WOFF,
    OP_AVGPOOL,
    OP_CONV_DIRECT,
    OP_CONV_IM2COL,
    OP_GAP,
    OP_LINEAR_I32,
    OP_MAXPOOL,
    S_CHUNK,
    T_C,
    T_FILL,
    T_H,
    T_PH,
    T_PW,
    T_SS,
    T_W,
    T_WP,
    W_ACT_B,
    W_BYTES,
    W_COLS,
    W_I32,
    W_I64,
    W_ROWQ,
    W_TMP,
    W_VEC,
)

# the model arguments' places in the descriptor (module constants: numba folds them)
_OPS, _TENS, _LTAB, _PANEL = slot("ops"), slot("tens"), slot("ltab"), slot("panel")
_BIAS, _M0, _SHIFT, _OUT_MULT = slot("bias"), slot("m0"), slot("shift"), slot("out_mult")
_MEAN, _STD, _SIZES = slot("mean"), slot("std"), slot("sizes")
_IN_SCALE, _IN_ZP, _HI = slot("in_scale"), slot("in_zp"), slot("hi")


@kernel
def _non_finite(bits: np.ndarray) -> bool:
    """Whether a float32 row, read as int32 ``bits``, holds a NaN or an infinity (all
    exponent bits set); integer OR-reduction, which vectorizes."""
    bad = False
    for j in range(bits.shape[0]):
        bad |= (bits[j] & 0x7F800000) == 0x7F800000
    return bad


@inline_kernel
def _vector(model: np.ndarray, at: int, dtype: Any) -> np.ndarray:
    """The 1-D model argument whose descriptor words start at ``at``."""
    return array_at(model[at], model[at + 1], dtype)


@inline_kernel
def _table(model: np.ndarray, at: int) -> np.ndarray:
    """The 2-D int64 model argument (op, tensor or layer table) at descriptor word ``at``."""
    return matrix_at(model[at], model[at + 1], model[at + 2], np.int64)


@kernel
def run_program(
    x: np.ndarray,
    model: np.ndarray,
    logits: np.ndarray,
    trace: np.ndarray,
    trace_at: np.ndarray,
    work: np.ndarray,
) -> int:
    """Run the program on float samples ``x`` (N, features); write ``logits`` (N, classes).

    ``model`` is the descriptor of the model's arrays and scalars
    (:func:`kernels.plan.abi.descriptor`). Returns the number of samples holding a NaN or
    an infinity (their logits are meaningless; the caller rejects the batch). ``work`` is
    uint8 scratch of at least ``sizes[W_BYTES]`` bytes (one call at a time per workspace;
    an empty one: allocated here).

    With a non-empty ``trace``, op ``i`` with ``trace_at[i] >= 0`` also copies its input
    activations there: sample ``s`` at ``trace_at[i] * N + s * bytes per sample`` (see
    :func:`kernels.plan.trace.trace_plan`). An empty ``trace`` records nothing.

    Every array below is unmanaged (:mod:`kernels.codegen.raw`): the caller holds the
    arguments and the model, so views of them need no reference counts.
    """
    x = unmanaged(x)
    logits = unmanaged(logits)
    trace = unmanaged(trace)
    trace_at = unmanaged(trace_at)
    ops = _table(model, _OPS)
    tens = _table(model, _TENS)
    ltab = _table(model, _LTAB)
    panel = _vector(model, _PANEL, np.uint8)
    bias = _vector(model, _BIAS, np.int32)
    m0 = _vector(model, _M0, np.int32)
    shift = _vector(model, _SHIFT, np.int32)
    out_mult = _vector(model, _OUT_MULT, np.float32)
    mean = _vector(model, _MEAN, np.float32)
    std = _vector(model, _STD, np.float32)
    sizes = _vector(model, _SIZES, np.int64)
    in_scale = f32_from_bits(model[_IN_SCALE])
    in_zp = model[_IN_ZP]
    hi = model[_HI]
    n_all = x.shape[0]
    bad = 0
    xbits = x.view(np.int32)
    for s in range(n_all):
        bad += _non_finite(xbits[s])
    if n_all == 0 or bad > 0:
        return bad
    classes = logits.shape[1]
    flat = logits.reshape(-1)
    chunk = min(sizes[S_CHUNK], n_all)
    owned = work
    if owned.shape[0] < sizes[W_BYTES]:
        owned = np.empty(sizes[W_BYTES], np.uint8)
    # the layout starts on a cache line (malloc aligns to 16 bytes): tile loads and
    # stores then never straddle two lines (2% at batch 64 on the Zen 4)
    skew = (-owned.ctypes.data) & (ALIGN - 1)
    end = sizes[W_BYTES] - ALIGN
    work = unmanaged(owned)[skew : skew + end]
    act_a = work[: sizes[W_ACT_B]]
    act_b = work[sizes[W_ACT_B] : sizes[W_COLS]]
    cols = work[sizes[W_COLS] : sizes[W_VEC]]
    vec = work[sizes[W_VEC] : sizes[W_TMP]].view(np.int32)
    tmp = work[sizes[W_TMP] : sizes[W_ROWQ]].view(np.int32)
    t0 = tens[0]
    row_q = work[sizes[W_ROWQ] : sizes[W_I32]]
    acc = work[sizes[W_I32] : sizes[W_I64]].view(np.int32)
    scratch = work[sizes[W_I64] : end].view(np.int64)
    for s0 in range(0, n_all, chunk):
        nb = min(chunk, n_all - s0)
        out = flat[s0 * classes : (s0 + nb) * classes]
        ss = t0[T_SS]
        act_a[: nb * ss] = np.uint8(t0[T_FILL])
        for s in range(nb):
            quantize_input(
                x[s0 + s],
                t0[T_C],
                t0[T_H],
                t0[T_W],
                mean,
                std,
                in_scale,
                in_zp,
                hi,
                act_a[s * ss :],
                t0[T_WP],
                t0[T_PH],
                t0[T_PW],
                row_q,
            )
        cur = act_a
        nxt = act_b
        for i in range(ops.shape[0]):
            # scalar reads of the tables: row views would cost an atomic reference count
            # increment and decrement each (a fifth of a batch-1 call)
            op = ops[i, F_OP]
            fin = ops[i, F_IN]
            fout = ops[i, F_OUT]
            c = tens[fin, T_C]
            if trace.shape[0] > 0 and trace_at[i] >= 0:
                at = trace_at[i] * n_all + s0 * tens[fin, T_SS]
                trace[at : at + nb * tens[fin, T_SS]] = cur[: nb * tens[fin, T_SS]]
            if op == OP_GAP:
                for s in range(nb):
                    global_sum(
                        cur[s * tens[fin, T_SS] :],
                        tens[fin, T_H] * tens[fin, T_W],
                        c,
                        ops[i, F_ZP],
                        vec[s * c :],
                    )
                continue
            padded = tens[fout, T_SS] != tens[fout, T_H] * tens[fout, T_W] * tens[fout, T_C]
            if padded and ops[i, F_LAST] == 0:
                nxt[: nb * tens[fout, T_SS]] = np.uint8(tens[fout, T_FILL])
            if op in (OP_MAXPOOL, OP_AVGPOOL):
                for s in range(nb):
                    a = cur[s * tens[fin, T_SS] :]
                    d = nxt[s * tens[fout, T_SS] :]
                    if op == OP_MAXPOOL:
                        max_pool(
                            a,
                            c,
                            tens[fin, T_W],
                            ops[i, F_OH],
                            ops[i, F_OW],
                            ops[i, F_KH],
                            ops[i, F_KW],
                            ops[i, F_SH],
                            ops[i, F_SW],
                            d,
                            tens[fout, T_WP],
                            tens[fout, T_PH],
                            tens[fout, T_PW],
                        )
                    else:
                        avg_pool(
                            a,
                            c,
                            tens[fin, T_W],
                            ops[i, F_OH],
                            ops[i, F_OW],
                            ops[i, F_KH],
                            ops[i, F_KW],
                            ops[i, F_SH],
                            ops[i, F_SW],
                            d,
                            tens[fout, T_WP],
                            tens[fout, T_PH],
                            tens[fout, T_PW],
                            tmp,
                        )
            else:
                li = ops[i, F_LAYER]
                emap = ops[i, F_MAP:]
                last = ops[i, F_LAST] != 0
                if op == OP_LINEAR_I32:
                    linear_i32(
                        vec,
                        c,
                        nb,
                        panel,
                        ltab[li, L_WOFF],
                        ltab[li, L_BITS],
                        ltab[li, L_K],
                        ltab[li, L_OUT],
                        bias,
                        m0,
                        shift,
                        out_mult,
                        ltab[li, L_P0],
                        ltab[li, L_OUTZP],
                        ltab[li, L_LO],
                        hi,
                        last,
                        emap,
                        nxt,
                        out,
                        acc,
                        scratch,
                    )
                else:
                    a = cur
                    stride = tens[fin, T_SS]
                    rows = nb
                    if op == OP_CONV_DIRECT:
                        stride = ops[i, F_SW] * c
                        rows = (nb - 1) * emap[0] + ops[i, F_OW]
                    elif op == OP_CONV_IM2COL:
                        kp = ltab[li, L_KP]
                        per = ops[i, F_OH] * ops[i, F_OW]
                        for s in range(nb):
                            im2col(
                                cur[s * tens[fin, T_SS] :],
                                tens[fin, T_WP],
                                c,
                                ops[i, F_OH],
                                ops[i, F_OW],
                                ops[i, F_KH],
                                ops[i, F_KW],
                                ops[i, F_SH],
                                ops[i, F_SW],
                                kp,
                                cols[s * per * kp :],
                            )
                        a = cols
                        stride = kp
                        rows = nb * per
                    gemm_rows(
                        a,
                        stride,
                        rows,
                        panel,
                        ltab[li, L_WOFF],
                        ltab[li, L_BITS],
                        ltab[li, L_K],
                        ltab[li, L_OUT],
                        bias,
                        m0,
                        shift,
                        out_mult,
                        ltab[li, L_P0],
                        ltab[li, L_OUTZP],
                        ltab[li, L_LO],
                        hi,
                        last,
                        emap,
                        nxt,
                        out,
                        acc,
                        scratch,
                    )
            cur, nxt = nxt, cur
    keep_alive(owned)  # the workspace allocated here lives until the end
    return 0
