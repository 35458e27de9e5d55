"""Column layout of the tables the compiled interpreter walks (numba-free).

:mod:`kernels.plan.program` writes these tables, :mod:`kernels.codegen.runner` and
:mod:`kernels.codegen.gemm` read them; keeping the layout here lets a process build models
without importing numba.
"""

from __future__ import annotations

# op codes
(OP_CONV_DIRECT, OP_CONV_IM2COL, OP_LINEAR, OP_LINEAR_I32, OP_MAXPOOL, OP_AVGPOOL, OP_GAP) = range(
    1, 8
)
WEIGHTED_OPS = (OP_CONV_DIRECT, OP_CONV_IM2COL, OP_LINEAR, OP_LINEAR_I32)
# columns of an epilogue map (see kernels.codegen.gemm._store)
(M_R, M_P, M_OW, M_PKH, M_PKW, M_POH, M_POW, M_SS, M_WP, M_PH, M_PW, M_PREMAX) = range(12)
MAP_FIELDS = 12
# columns of an op-table row; F_MAP starts the epilogue map (M_*)
(
    F_OP,
    F_IN,
    F_OUT,
    F_LAYER,
    F_LAST,
    F_ZP,
    F_KH,
    F_KW,
    F_SH,
    F_SW,
    F_OH,
    F_OW,
    F_PKH,
    F_PKW,
    F_MAP,
) = range(15)
OP_FIELDS = F_MAP + MAP_FIELDS
# columns of a tensor-table row: interior (h, w, c), padding, padded width, bytes per
# sample, code of the padding
T_H, T_W, T_C, T_PH, T_PW, T_WP, T_SS, T_FILL = range(8)
T_FIELDS = 8
# columns of a layer-table row
L_WOFF, L_BITS, L_K, L_OUT, L_P0, L_INZP, L_OUTZP, L_LO, L_KP = range(9)
LAYER_FIELDS = 9
# entries of the sizes vector: bytes per sample of the activation, im2col and int32 sum
# buffers, samples per chunk, then byte offsets into the caller's workspace (laid out for a
# whole chunk; the first activation buffer at 0) and its size, which includes ALIGN bytes
# the kernel may skip to start the layout on a cache line
S_ACT, S_COL, S_VEC, S_CHUNK = range(4)
W_ACT_B, W_COLS, W_VEC, W_TMP, W_ROWQ, W_I32, W_I64, W_BYTES = range(4, 12)
SIZES = 12
ALIGN = 64
PANEL_ROWS = 64  # GEMM rows whose activations stay in L1 across the output blocks
I32_SCRATCH = 256  # int32 sums of one wide tile (8 rows by two blocks of 16 channels)
