"""The agent's answer to ``collect``: its labelled-sample log and QCore buffer, with
provenance, as msgpack-ready array records (``edge-agent collect`` reads them).

The samples are as the model takes them (after the bundle's per-series normalization, if
any: the reply says so). The reply is capped well below the client's 16 MiB reply
limit, keeping the newest labelled samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.bundle import array_record
from edge_agent.service.state import LabelledSample

MAX_REPLY_BYTES = 12 << 20
FORMAT = 1


def collect_reply(
    board: str,
    model_version: str,
    input_shape: Sequence[int],
    label_names: Sequence[str],
    series_normalized: bool,
    labelled: Sequence[LabelledSample],
    qcore: dict[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Everything one agent contributes to a fleet data set; ``qcore`` is the calibration
    controller's state (array records of the QCore buffer)."""
    per_sample = int(np.prod(input_shape)) * 4 + 64
    budget = MAX_REPLY_BYTES - (len(qcore["X"]["data"]) if qcore else 0)
    keep = max(0, min(len(labelled), budget // per_sample))
    rows = list(labelled)[len(labelled) - keep :]
    shape = tuple(int(v) for v in input_shape)
    X = (
        np.stack([r.x for r in rows]).astype(np.float32)
        if rows
        else np.zeros((0, *shape), np.float32)
    )
    out: dict[str, Any] = {
        "format": FORMAT,
        "board": board,
        "model_version": model_version,
        "time": time.time(),
        "input_shape": list(shape),
        "label_names": list(label_names),
        "series_normalized": series_normalized,
        "labelled_dropped": len(labelled) - keep,
        "labelled": {
            "X": array_record(X),
            "y": array_record(np.array([r.label for r in rows], np.int64)),
            "pred": array_record(np.array([r.pred for r in rows], np.int64)),
            "ts": array_record(np.array([r.ts for r in rows], np.float64)),
            "seq": array_record(np.array([r.seq for r in rows], np.int64)),
            "sensor": [r.sensor for r in rows],
        },
        "qcore": None,
    }
    if qcore is not None:
        out["qcore"] = {k: qcore[k] for k in ("X", "y", "labelled", "misses", "source", "time")}
    return out
