"""Recording layer inputs during a run: where :func:`kernels.codegen.runner.run_program`
records them (:func:`trace_plan`) and reading them back (:func:`layer_inputs`)."""

from __future__ import annotations

import numpy as np

from kernels.plan import tables
from kernels.plan.model import Model


def trace_plan(model: Model) -> tuple[np.ndarray, int]:
    """Where :func:`kernels.codegen.runner.run_program` records inputs for :func:`layer_inputs`.

    Returns ``trace_at`` (per op: offset of its input within one sample's record, -1 for
    none) and the bytes recorded per sample. Recorded are the inputs of every weighted op,
    except that a linear layer after ``gap`` is traced through the input of the ``gap``.
    """
    at = np.full(len(model.ops), -1, np.int64)
    offset = 0
    for i, row in enumerate(model.ops):
        op = row[tables.F_OP]
        if (op in tables.WEIGHTED_OPS and op != tables.OP_LINEAR_I32) or op == tables.OP_GAP:
            at[i] = offset
            offset += int(model.tens[row[tables.F_IN], tables.T_SS])
    return at, offset


def layer_inputs(
    model: Model, ltab: np.ndarray, trace: np.ndarray, at: np.ndarray, n: int
) -> list[np.ndarray]:
    """Every weighted layer's input with its zero point subtracted, from a ``trace`` of
    ``n`` samples recorded at ``at`` (:func:`trace_plan`), as docs/quantization.md lays it
    out: (N, C, T) or (N, C, H, W) for a convolution, (N, K) for a linear layer (the int32
    centred sums after ``gap``)."""
    out: list[np.ndarray] = []
    for i, row in enumerate(model.ops):
        op = row[tables.F_OP]
        if op not in tables.WEIGHTED_OPS:
            continue
        slot = model.slots[int(row[tables.F_LAYER])]
        j = i - 1 if op == tables.OP_LINEAR_I32 else i  # a gap's input
        h, w, c, ph, pw, wp, ss, _ = (int(v) for v in model.tens[model.ops[j][tables.F_IN]])
        start = int(at[j]) * n
        codes = trace[start : start + n * ss].reshape(n, ss)[:, : (h + 2 * ph) * wp * c]
        x = codes.reshape(n, h + 2 * ph, wp, c)[:, ph : ph + h, pw : pw + w].transpose(0, 3, 1, 2)
        if op == tables.OP_LINEAR_I32:
            zp = int(model.ops[j][tables.F_ZP])
            sums = (x.astype(np.int64) - zp).reshape(n, c, -1).sum(axis=2)
            out.append(sums.astype(np.int32))
            continue
        centred = x.astype(np.int16) - np.int16(ltab[row[tables.F_LAYER], tables.L_INZP])
        if slot.kind == "conv1d":
            out.append(centred[:, :, 0])
        elif slot.kind == "conv2d":
            out.append(centred)
        else:
            out.append(centred.reshape(n, -1))
    return out
