"""Pieces of ``bench/inference.py`` beside the anchors: torch runners, the bare GEMM, and the
engine-only child process that measures peak RSS and start-up without torch."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.cputime import interleaved

ROOT = Path(__file__).resolve().parents[1]


def cached_aot() -> tuple[Any, float | None]:
    """The AOT kernels of these sources from the kernel cache (the agent's,
    :func:`kernels.build.cachepaths.aot_dir`), built there first if missing; and the build's
    wall seconds (None: reused). Benches time the module the agent would load."""
    import time

    from kernels.build import aot
    from kernels.exec import backend

    try:
        return backend.load("aot"), None
    except backend.KernelsUnavailable:
        t0 = time.perf_counter()
        aot.build()
        return backend.load("aot"), time.perf_counter() - t0


def torch_runners(net: Any, calib: np.ndarray) -> dict[str, Callable[[np.ndarray], Any]]:
    """torch FP32 eager and torch.ao int8 (FX static, x86 backend) forward functions."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)  # training turns it on; quantized ops lack it
    torch.backends.quantized.engine = "x86"
    example = (torch.from_numpy(calib[:1]),)
    prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        prepared(torch.from_numpy(calib))
    qnet = convert_fx(prepared).eval()

    def run(model: Any) -> Callable[[np.ndarray], Any]:
        def f(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        return f

    return {"torch_fp32": run(net), "torch_int8": run(qnet)}


def gemm_bench(seconds: float) -> dict[str, float]:
    """GMAC/s of a 256x256x256 product: engine kernel (8/4/2 bits, requantized uint8 output
    as in hidden layers), numpy FP32, ORT int8 ``MatMulInteger`` (int32 output)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kernels.codegen.gemm import gemm_rows, identity_map
    from kernels.plan import layout, tables

    m = k = o = 256
    macs = m * k * o
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[Callable[[], Any], int]] = {}
    for bits in (8, 4, 2):
        lim = 1 << (bits - 1)
        q = rng.integers(-lim, lim, (o, k)).astype(np.int8)
        panel = layout.to_panel(q, bits)
        kp = layout.padded_k(k, bits)
        a = rng.integers(0, 256, m * kp + 64).astype(np.uint8)
        bias = np.zeros(o, np.int32)
        m0 = np.full(o, 1 << 30, np.int32)  # requantize by 2^-12 to uint8 (hidden-layer path)
        shift = np.full(o, 42, np.int32)
        out = np.empty(m * o + 64, np.uint8)
        args = (
            a,
            kp,
            m,
            panel,
            0,
            bits,
            k,
            o,
            bias,
            m0,
            shift,
            np.zeros(o, np.float32),
            0,
            128,
            0,
            255,
            False,
            identity_map(o),
            out,
            np.empty(1, np.float32),
            np.empty(tables.I32_SCRATCH, np.int32),
            np.empty(8 + tables.PANEL_ROWS, np.int64),
        )
        cases[f"engine_{bits}bit"] = (functools.partial(gemm_rows, *args), macs)
    fa = rng.normal(size=(m, k)).astype(np.float32)
    fb = rng.normal(size=(k, o)).astype(np.float32)
    cases["numpy_fp32"] = (lambda: fa @ fb, macs)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, o])],
        [
            helper.make_tensor(
                "b",
                TensorProto.INT8,
                [k, o],
                rng.integers(-128, 128, k * o).astype(np.int8).tobytes(),
                raw=True,
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString(),
        opts,
        providers=["CPUExecutionProvider"],
    )
    ua = rng.integers(0, 256, (m, k)).astype(np.uint8)
    cases["ort_matmulinteger"] = (lambda: sess.run(None, {"a": ua}), macs)
    rates, _ = interleaved(cases, seconds, reps=3)
    return {name: v["cpu_median"] / 1e9 for name, v in rates.items()}


_CHILD = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
from edge_agent.engine.engine import Engine
e = Engine.from_path(sys.argv[1])
assert e.backend == sys.argv[2], e.backend
t1 = time.perf_counter()
x = np.zeros((1, *e.input_shape), np.float32)
e.predict(x)
t2 = time.perf_counter()
# not numpy.random: its import (and OpenSSL's, through secrets) is 5 MB the engine never maps
xb = np.sin(np.arange(64 * x.size, dtype=np.float32)).reshape(64, *e.input_shape)
for b in e.available_bits:
    e.set_bits(b)
    for _ in range(20):
        e.predict(xb)
        e.predict(xb[:1])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kb = {k: int(status[k].split()[0]) for k in ("VmHWM", "RssAnon", "RssFile")}
print(json.dumps({"rss_mb": kb["VmHWM"] / 1024,
                  "rss_anon_mb": kb["RssAnon"] / 1024, "rss_file_mb": kb["RssFile"] / 1024,
                  "start_s": t1 - t0, "first_sample_ms": (t2 - t1) * 1e3,
                  "imported": sorted({m.split(".")[0] for m in sys.modules}
                                     & {"torch", "numba", "llvmlite"})}))
"""


_BASELINE = """
import numba
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]) / 1024)
"""


def engine_child(bundle_path: Path, kernels: str, env: dict[str, str]) -> dict[str, Any]:
    """Peak RSS (and its private / file-backed parts at the end), start time and
    first-sample latency of an engine-only process running ``kernels`` (aot or jit), and
    which of torch, numba and llvmlite it imported.

    Peak RSS is the process's ``VmHWM``: ``ru_maxrss`` would carry over the parent's
    high-water mark from before ``exec`` (the parent holds torch and onnxruntime).
    """
    env = {**os.environ, **env, "EDGE_AGENT_KERNELS": kernels}
    argv = ["-c", _CHILD, str(bundle_path), kernels]
    return json_child(argv, ROOT, env, f"engine-only child ({kernels})")


def json_child(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> dict[str, Any]:
    """Run this interpreter with ``argv`` and return the JSON object its last line prints;
    a failure raises RuntimeError naming ``what`` with the end of its stderr."""
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def numba_import_rss_mb() -> float:
    """Peak RSS of a process that only imports numba."""
    base = subprocess.run(
        [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
    )
    return float(base.stdout.strip())
