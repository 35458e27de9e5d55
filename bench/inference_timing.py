"""Runtimes of ``bench/inference.py`` and their interleaved timing, in this process or a child.

``python bench/inference_timing.py PLAN.json OUT.json [--noamx]`` times the engine and the
int8 anchors (no torch) in a fresh process; with ``--noamx`` the process first refuses
itself AMX (:func:`bench.noamx.refuse_amx`), so onnxruntime and LiteRT run the kernels they
would run on a CPU without it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCHES = (1, 64)
Runner = Callable[[np.ndarray], Any]
#: a runtime: batch -> (forward function, its input at that batch)
Runtime = dict[int, tuple[Runner, np.ndarray]]


def engine_runtime(bundle_path: Path, bits: int, kernels: Any, raw: np.ndarray) -> Runtime:
    """The engine at one bit-width: float inputs (normalized inside), float logits."""
    from edge_agent.bundle_io import load_bundle
    from edge_agent.engine.engine import Engine

    engine = Engine(load_bundle(bundle_path), bits=bits, kernels=kernels)
    return {n: (engine.predict_logits, np.ascontiguousarray(raw[:n])) for n in BATCHES}


def ort_runtime(path: Path, normed: np.ndarray) -> Runtime:
    """An onnxruntime session (dynamic batch) on normalized inputs."""
    from bench import anchor_onnx

    run = anchor_onnx.runner(path)
    return {n: (run, np.ascontiguousarray(normed[:n])) for n in BATCHES}


def litert_runtime(path: Path, normed: np.ndarray) -> Runtime:
    """A LiteRT interpreter per batch size on channels-last normalized inputs."""
    from bench import anchor_litert

    x = anchor_litert.channels_last(normed)
    return {n: (anchor_litert.runner(path, n), np.ascontiguousarray(x[:n])) for n in BATCHES}


def time_runtimes(
    runtimes: dict[str, Runtime], seconds: float, reps: int
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, Any]]:
    """Interleaved thread-CPU timing of every runtime at every batch, ``seconds`` of thread
    CPU time each (over all ``reps``).

    Returns ``{runtime: {"b1": summary, "b64": summary}}`` (see :mod:`bench.cputime`) and
    the timing info (load averages).
    """
    from bench.cputime import interleaved

    cases: dict[str, tuple[Callable[[], Any], int]] = {
        f"{name}/b{n}": (functools.partial(fn, x), n)
        for name, rt in runtimes.items()
        for n, (fn, x) in rt.items()
    }
    rates, info = interleaved(cases, seconds, reps)  # ``seconds`` for each case
    out = {name: {f"b{n}": rates[f"{name}/b{n}"] for n in rt} for name, rt in runtimes.items()}
    return out, info


def child_main(argv: list[str]) -> int:
    """Time the plan's engine and int8 anchors in this process; write the rates as JSON."""
    noamx = "--noamx" in argv
    if noamx:
        from bench.noamx import refuse_amx

        refuse_amx()  # before onnxruntime or LiteRT is loaded
    plan = json.loads(Path(argv[0]).read_text())
    from bench.noamx import amx_state
    from kernels.exec import backend

    kernels = backend.load("aot", aot_dir=Path(plan["aot_dir"]))
    result: dict[str, Any] = {"models": {}}
    for name, m in plan["models"].items():
        raw, normed = np.load(m["raw"]), np.load(m["normed"])
        runtimes = {
            "engine_aot_8bit": engine_runtime(Path(m["bundle"]), 8, kernels, raw),
            "ort_int8": ort_runtime(Path(m["onnx_int8"]), normed),
        }
        if m.get("tflite"):
            runtimes["litert_int8"] = litert_runtime(Path(m["tflite"]), normed)
        rates, info = time_runtimes(runtimes, plan["seconds"], plan["reps"])
        result["models"][name] = {"rates": rates, "timing": info}
    result["amx"] = amx_state()
    result["noamx"] = noamx
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
