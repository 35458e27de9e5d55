"""LiteRT anchor: the bundle's FP network as a full-integer TFLite model, run by XNNPACK.

Install (bench only; neither is needed by the agent): ``pip install -e '.[bench]'``
(ai-edge-litert, the interpreter, and tensorflow-cpu, the converter; both install beside
torch 2.13.0 on Python 3.11), or keep TensorFlow in a venv of its own:

    pip install ai-edge-litert
    python3 -m venv /opt/tf && /opt/tf/bin/pip install numpy tensorflow-cpu
    BENCH_TF_PYTHON=/opt/tf/bin/python python bench/inference.py

The converter (TensorFlow) runs in a child process of whichever Python ``--tf-python``
(or ``$BENCH_TF_PYTHON``) names, default this one; it never shares a process with
torch. Without ai-edge-litert, or without a Python that imports TensorFlow, the LiteRT
rows are skipped with a message saying which is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def missing(tf_python: str) -> str | None:
    """Why the LiteRT anchor cannot run here, or None."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "ai-edge-litert is not installed (pip install ai-edge-litert)"
    probe = subprocess.run(
        [tf_python, "-c", "import tensorflow"],
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if probe.returncode != 0:
        return (
            f"{tf_python} cannot import tensorflow (the TFLite converter); give "
            "--tf-python or $BENCH_TF_PYTHON, a Python with tensorflow-cpu"
        )
    return None


def convert(
    spec: dict[str, Any],
    fp_weights: list[tuple[np.ndarray, np.ndarray]],
    calib: np.ndarray,
    fp_logits: np.ndarray,
    out: Path,
    tf_python: str,
) -> dict[str, Any]:
    """Write the full-integer .tflite of a bundle's FP network; returns the converter's report."""
    arrays: dict[str, Any] = {"spec": json.dumps(spec), "calib": calib, "fp_logits": fp_logits}
    for i, (w, b) in enumerate(fp_weights):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    npz = out.with_suffix(".npz")
    np.savez(npz, **arrays)
    done = subprocess.run(
        [tf_python, str(HERE / "tflite_convert.py"), str(npz), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    if done.returncode != 0:
        raise RuntimeError(f"TFLite conversion failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, T) -> (N, 1, T, C), (N, C, H, W) -> (N, H, W, C): the twin's layout (NHWC,
    TFLite's own; converted outside the timed call)."""
    x = x[:, :, None] if x.ndim == 3 else x
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def runner(path: Path, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """Forward function of a .tflite file at a fixed batch, XNNPACK, one thread."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    interp.allocate_tensors()
    i_in, i_out = inp["index"], interp.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(i_in, x)
        interp.invoke()
        return interp.get_tensor(i_out)

    return run


def op_types(path: Path) -> dict[str, int]:
    """Builtin op names of a .tflite model with their tensor types (e.g. CONV_2D:int8)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    counts: dict[str, int] = {}
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    for op in interp._get_ops_details():
        outs = op.get("outputs", [])
        dtype = (
            np.dtype(tensors[outs[0]]["dtype"]).name if len(outs) and outs[0] in tensors else "?"
        )
        key = f"{op['op_name']}:{dtype}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def default_tf_python() -> str:
    """``$BENCH_TF_PYTHON``, else this interpreter."""
    return os.environ.get("BENCH_TF_PYTHON", sys.executable)
