"""The whole-model interpreter: one compiled call runs every layer of every sample.

A model is an op table and a tensor-layout table (see :mod:`kernels.plan.program`; columns in
:mod:`kernels.plan.tables`) plus flat weight arrays. The batch goes through the layers in chunks
of up to ``sizes[S_CHUNK]`` samples: every weighted layer is one GEMM over the rows of all
samples of the chunk, and its epilogue writes straight into the next layer's (padded) input
layout. All scratch memory is carved from the caller's workspace (``sizes[W_*]``), so a
call allocates nothing; an empty workspace makes the call allocate its own.
"""

from __future__ import annotations

import numpy as np

from kernels.codegen.gemm import gemm_rows
from kernels.codegen.jit import kernel
from kernels.codegen.linear import linear_i32
from kernels.codegen.ops import avg_pool, global_sum, im2col, max_pool, quantize_input
from kernels.plan.tables import (
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


@kernel
def _non_finite(bits: np.ndarray) -> bool:
    """Whether a float32 row, read as int32 ``bits``, holds a NaN or an infinity (all
    exponent bits set); integer OR-reduction, which vectorizes."""
    bad = False
    for j in range(bits.shape[0]):
        bad |= (bits[j] & 0x7F800000) == 0x7F800000
    return bad


@kernel
def run_program(
    x: np.ndarray,
    ops: np.ndarray,
    tens: np.ndarray,
    ltab: np.ndarray,
    panel: np.ndarray,
    bias: np.ndarray,
    m0: np.ndarray,
    shift: np.ndarray,
    out_mult: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    in_scale: np.float32,
    in_zp: int,
    hi: int,
    sizes: np.ndarray,
    logits: np.ndarray,
    trace: np.ndarray,
    trace_at: np.ndarray,
    work: np.ndarray,
) -> int:
    """Run the program on float samples ``x`` (N, features); write ``logits`` (N, classes).

    Returns the number of samples holding a NaN or an infinity (their logits are
    meaningless; the caller rejects the batch). ``work`` is uint8 scratch of at least
    ``sizes[W_BYTES]`` bytes (one call at a time per workspace; an empty one: allocated here).

    With a non-empty ``trace``, op ``i`` with ``trace_at[i] >= 0`` also copies its input
    activations there: sample ``s`` at ``trace_at[i] * N + s * bytes per sample`` (see
    :func:`kernels.plan.trace.trace_plan`). An empty ``trace`` records nothing.
    """
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
    if work.shape[0] < sizes[W_BYTES]:
        work = np.empty(sizes[W_BYTES], np.uint8)
    act_a = work[: sizes[W_ACT_B]]
    act_b = work[sizes[W_ACT_B] : sizes[W_COLS]]
    cols = work[sizes[W_COLS] : sizes[W_VEC]]
    vec = work[sizes[W_VEC] : sizes[W_TMP]].view(np.int32)
    tmp = work[sizes[W_TMP] : sizes[W_ROWQ]].view(np.int32)
    t0 = tens[0]
    row_q = work[sizes[W_ROWQ] : sizes[W_I32]]
    acc = work[sizes[W_I32] : sizes[W_I64]].view(np.int32)
    scratch = work[sizes[W_I64] : sizes[W_BYTES]].view(np.int64)
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
    return 0
