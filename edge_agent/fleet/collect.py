"""``edge-agent collect``: field samples from many agents into one .npz with provenance,
and how ``edge-agent train --extra`` weights them into a training set.

The .npz holds, per sample: ``X``, ``y`` (the true label, or the FP model's pseudo-label
where ``labelled`` is false), ``labelled``, ``source`` (``log``: the agent's
labelled-sample log; ``qcore``: its QCore buffer), ``board``, ``model_version``,
``sample_time`` (Unix s), ``collected_time``; and ``label_names``/``input_shape`` once.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import BundleError, array_from_record
from edge_agent.client import AgentAddress, ClientError, status_client
from edge_agent.data.datasets import Dataset

log = logging.getLogger(__name__)

SOURCE_STREAM = 1  # edge_agent.calibrate.qcore: buffer rows that came from the stream
COLUMNS = (
    "X",
    "y",
    "labelled",
    "source",
    "board",
    "model_version",
    "sample_time",
    "collected_time",
)


@dataclass
class Collected:
    """What one collect run gathered."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    label_names: list[str] | None = None
    input_shape: tuple[int, ...] | None = None

    @property
    def samples(self) -> int:
        """Samples gathered."""
        return sum(len(p["y"]) for p in self.parts)


def _rows(reply: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """One agent's reply as columns (raises ValueError naming what is wrong)."""
    try:
        lab = {
            k: array_from_record(reply["labelled"][k], f"{where} labelled.{k}")
            for k in ("X", "y", "ts")
        }
        q = reply.get("qcore")
        qc = (
            {
                k: array_from_record(q[k], f"{where} qcore.{k}")
                for k in ("X", "y", "labelled", "source", "time")
            }
            if q
            else None
        )
    except (KeyError, TypeError, BundleError) as exc:
        raise ValueError(f"{where}: malformed collect reply: {exc}") from None
    board, version, now = str(reply["board"]), str(reply["model_version"]), float(reply["time"])
    X, y = [lab["X"]], [lab["y"]]
    labelled, source, ts = (
        [np.ones(len(lab["y"]), bool)],
        [np.zeros(len(lab["y"]), np.uint8)],
        [lab["ts"]],
    )
    if qc is not None:
        field_rows = qc["source"] == SOURCE_STREAM  # the bundle's own QCore is training data
        X.append(qc["X"][field_rows])
        y.append(qc["y"][field_rows])
        labelled.append(qc["labelled"][field_rows].astype(bool))
        source.append(np.ones(int(field_rows.sum()), np.uint8))
        ts.append(qc["time"][field_rows])
    n = sum(len(v) for v in y)
    return {
        "X": np.concatenate(X).astype(np.float32),
        "y": np.concatenate(y).astype(np.int64),
        "labelled": np.concatenate(labelled),
        "source": np.concatenate(source),
        "board": np.full(n, board),
        "model_version": np.full(n, version),
        "sample_time": np.concatenate(ts).astype(np.float64),
        "collected_time": np.full(n, now),
    }


def collect(
    agents: Sequence[str | AgentAddress],
    timeout_s: float = 30.0,
    client_key: tuple[bytes, bytes] | None = None,
) -> Collected:
    """Ask every agent for its field data; an agent that fails is reported, not fatal.
    ``client_key``: this client's CURVE key pair, for agents given with a server key."""
    out = Collected()
    for agent in agents:
        ep = str(agent)
        try:
            with status_client(agent, timeout_s, client_key) as c:
                reply = c.request("collect")
            rows = _rows(reply, ep)
            shape, names = tuple(reply["input_shape"]), list(reply["label_names"])
            if out.input_shape is None:
                out.input_shape, out.label_names = shape, names
            elif (shape, names) != (out.input_shape, out.label_names):
                raise ValueError(
                    f"{ep}: input shape {list(shape)} / classes {names} differ "
                    f"from the first agent's"
                )
        except (ClientError, ValueError, KeyError) as exc:
            out.errors[ep] = str(exc)
            log.error("collect from %s failed: %s", ep, exc)
            continue
        if reply.get("series_normalized"):
            log.warning("%s: samples are per-series normalized (as its model takes them)", ep)
        log.info(
            "collected %d samples (%d labelled) from %s (board %s, model %s)",
            len(rows["y"]),
            int(rows["labelled"].sum()),
            ep,
            reply["board"],
            reply["model_version"],
        )
        out.parts.append(rows)
    return out


def save(c: Collected, path: Path) -> None:
    """Write the .npz atomically (a temporary file renamed over it)."""
    if not c.parts or c.input_shape is None:
        raise ValueError("nothing collected")
    cols: dict[str, Any] = {k: np.concatenate([p[k] for p in c.parts]) for k in COLUMNS}
    cols["label_names"] = np.array(c.label_names)
    cols["input_shape"] = np.array(c.input_shape, np.int64)
    tmp = path.with_name(path.name + f".tmp{time.monotonic_ns()}.npz")
    np.savez_compressed(tmp, **cols)
    tmp.replace(path)


def load_field(path: str | Path, pseudo: bool = False) -> dict[str, np.ndarray]:
    """A collected .npz; with ``pseudo`` False only truly labelled samples are kept."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # np.load would offer pickle
        raise ValueError(f"{path}: not an .npz archive (edge-agent collect writes one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read collected data: {exc}") from None
    missing = [k for k in (*COLUMNS, "label_names") if k not in d]
    if missing:
        raise ValueError(f"{path}: not a collect file (missing {', '.join(missing)})")
    keep = np.ones(len(d["y"]), bool) if pseudo else d["labelled"].astype(bool)
    return {k: (v[keep] if k in COLUMNS else v) for k, v in d.items()}


def with_field_samples(
    ds: Dataset, path: str | Path, weight: int = 2, pseudo: bool = False
) -> tuple[Dataset, dict[str, Any]]:
    """``ds`` with the collected samples added to its training split ``weight`` times
    (oversampling is the weighting: every training step draws them that much more often).
    The test split is untouched, so accuracies stay comparable."""
    if weight < 1:
        raise ValueError("--extra-weight must be >= 1")
    f = load_field(path, pseudo)
    names = [str(v) for v in f["label_names"]]
    if names != list(ds.label_names):
        raise ValueError(f"{path}: classes {names} differ from the data set's {ds.label_names}")
    if f["X"].shape[1:] != ds.X_train.shape[1:]:
        raise ValueError(
            f"{path}: sample shape {list(f['X'].shape[1:])} differs from the data "
            f"set's {list(ds.X_train.shape[1:])}"
        )
    X = np.concatenate([ds.X_train, *[f["X"]] * weight]).astype(np.float32)
    y = np.concatenate([ds.y_train, *[f["y"]] * weight]).astype(np.int64)
    info = {
        "file": str(path),
        "samples": len(f["y"]),
        "weight": weight,
        "boards": sorted({str(b) for b in f["board"]}),
        "model_versions": sorted({str(v) for v in f["model_version"]}),
    }
    return replace(ds, X_train=X, y_train=y), info
