"""The whole-model interpreter: one compiled call runs every layer of every sample.

A model is an op table (see :mod:`kernels.program`) plus flat weight arrays; the loop
over samples and layers runs inside numba, so a batch costs one Python call however many
layers the model has.
"""

from __future__ import annotations

import numpy as np

from kernels.jit import kernel
from kernels.ops import (
    avg_pool,
    gemm_requant,
    global_sum,
    im2col,
    linear_i32,
    max_pool,
    pad_copy,
    quantize_input,
)

# op codes and the columns of an op-table row
OP_CONV, OP_LINEAR, OP_MAXPOOL, OP_AVGPOOL, OP_GAP, OP_FLATTEN = 1, 2, 3, 4, 5, 6
(F_OP, F_H, F_W, F_C, F_OH, F_OW, F_OC, F_KH, F_KW, F_SH, F_SW, F_PH, F_PW, F_LAYER,
 F_LAST, F_ZP) = range(16)
OP_FIELDS = 16
# columns of a layer-table row
L_WOFF, L_BITS, L_K, L_OUT, L_P0, L_INZP, L_OUTZP, L_LO, L_KP = range(9)
LAYER_FIELDS = 9
# entries of the sizes vector
S_ACT, S_PAD, S_COL, S_VEC = range(4)


@kernel
def run_program(x: np.ndarray, ops: np.ndarray, ltab: np.ndarray, panel: np.ndarray,
                bias: np.ndarray, m0: np.ndarray, shift: np.ndarray, out_mult: np.ndarray,
                mean: np.ndarray, std: np.ndarray, in_scale: np.float32, in_zp: int, hi: int,
                sizes: np.ndarray, logits: np.ndarray) -> None:
    """Run the program on float samples ``x`` (N, features); write ``logits`` (N, classes)."""
    act_a = np.empty(sizes[S_ACT], np.uint8)
    act_b = np.empty(sizes[S_ACT], np.uint8)
    padded = np.empty(sizes[S_PAD], np.uint8)
    cols = np.empty(sizes[S_COL], np.uint8)
    vec = np.empty(sizes[S_VEC], np.int32)
    tmp = np.empty(sizes[S_VEC], np.int32)
    acc = np.empty(8 * 16, np.int32)
    for s in range(x.shape[0]):
        out = logits[s]
        quantize_input(x[s], ops[0, F_C], ops[0, F_H] * ops[0, F_W], mean, std, in_scale,
                       in_zp, hi, act_a)
        cur = act_a
        nxt = act_b
        centred = False
        for i in range(ops.shape[0]):
            op = ops[i, F_OP]
            h = ops[i, F_H]
            w = ops[i, F_W]
            c = ops[i, F_C]
            oh = ops[i, F_OH]
            ow = ops[i, F_OW]
            last = ops[i, F_LAST] != 0
            if op in (OP_CONV, OP_LINEAR):
                lay = ops[i, F_LAYER]
                w_off = ltab[lay, L_WOFF]
                bits = ltab[lay, L_BITS]
                k = ltab[lay, L_K]
                oc = ltab[lay, L_OUT]
                p0 = ltab[lay, L_P0]
                zo = ltab[lay, L_OUTZP]
                lo = ltab[lay, L_LO]
                if op == OP_LINEAR and centred:
                    linear_i32(vec, panel, w_off, bits, k, oc, bias, m0, shift, out_mult, p0,
                               zo, lo, hi, last, nxt, out, acc)
                elif op == OP_LINEAR:
                    gemm_requant(cur, k, 1, panel, w_off, bits, k, oc, bias, m0, shift,
                                 out_mult, p0, zo, lo, hi, last, nxt, out, acc)
                else:
                    ph = ops[i, F_PH]
                    pw = ops[i, F_PW]
                    src = cur
                    if ph > 0 or pw > 0:
                        pad_copy(cur, h, w, c, padded, ph, pw, ltab[lay, L_INZP])
                        src = padded
                    kh = ops[i, F_KH]
                    if kh == 1 and oh == 1 and ph == 0:  # 1-D: windows are contiguous runs
                        gemm_requant(src, ops[i, F_SW] * c, ow, panel, w_off, bits, k, oc,
                                     bias, m0, shift, out_mult, p0, zo, lo, hi, last, nxt,
                                     out, acc)
                    else:
                        kp = ltab[lay, L_KP]
                        im2col(src, w + 2 * pw, c, oh, ow, kh, ops[i, F_KW], ops[i, F_SH],
                               ops[i, F_SW], kp, cols)
                        gemm_requant(cols, kp, oh * ow, panel, w_off, bits, k, oc, bias, m0,
                                     shift, out_mult, p0, zo, lo, hi, last, nxt, out, acc)
                centred = False
                cur, nxt = nxt, cur
            elif op == OP_MAXPOOL:
                max_pool(cur, c, w, oh, ow, ops[i, F_KH], ops[i, F_KW], ops[i, F_SH],
                         ops[i, F_SW], nxt)
                cur, nxt = nxt, cur
            elif op == OP_AVGPOOL:
                avg_pool(cur, c, w, oh, ow, ops[i, F_KH], ops[i, F_KW], ops[i, F_SH],
                         ops[i, F_SW], nxt, tmp)
                cur, nxt = nxt, cur
            elif op == OP_GAP:
                global_sum(cur, h * w, c, ops[i, F_ZP], vec)
                centred = True
