"""Where the engine's per-call time goes, at batch 1 and 64 (AOT kernels, thread CPU time).

    python bench/engine_profile.py BUNDLE [--seconds 4] [--out bench/results]

Times, interleaved: the whole ``Engine.predict_logits`` call (a float32 C-contiguous
batch: the fast path), the slow path's input conversion (``_as_batch``, for other inputs)
and the compiled ``run_program`` alone, with a preallocated workspace as the engine gives
it. With ``perf`` installed it then samples ``run_program`` in a child process at each
batch and lists the symbols that hold the most samples (micro-kernel + epilogue inside
``gemm_rows``, NRT reference counting and allocation, the im2col / pooling / quantization
kernels, the Python wrapper).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_LOOP = """
import sys, time, numpy as np
from pathlib import Path
from edge_agent.bundle_io import load_bundle
from edge_agent.engine.engine import Engine, _NO_TRACE, _NO_TRACE_AT
from kernels.exec import backend
from kernels.plan.tables import W_BYTES
k = backend.load("aot", aot_dir=Path(sys.argv[1]))
b = load_bundle(sys.argv[2]); n = int(sys.argv[3])
st = Engine(b, bits=8, kernels=k)._state
xs = np.random.default_rng(0).normal(size=(n, int(np.prod(b.input_shape)))).astype(np.float32)
out = np.empty((n, b.num_classes), np.float32)
work = np.empty(st.model.sizes[W_BYTES], np.uint8)
t0 = time.thread_time()
while time.thread_time() - t0 < float(sys.argv[4]):
    for _ in range(100):
        k.run_program(xs, *st.args, out, _NO_TRACE, _NO_TRACE_AT, work)
"""


def perf_top(
    aot_dir: Path, bundle: Path, batch: int, seconds: float, tmp: Path, top: int = 12
) -> list[tuple[float, str]]:
    """(percent, symbol) of the symbols with the most samples of ``run_program`` calls."""
    data = tmp / f"perf{batch}.data"
    subprocess.run(
        [
            "perf",
            "record",
            "-q",
            "-F",
            "4000",
            "-o",
            str(data),
            sys.executable,
            "-c",
            _LOOP,
            str(aot_dir),
            str(bundle),
            str(batch),
            str(seconds),
        ],
        check=True,
        cwd=ROOT,
        # the repository first, then what this process was given (e.g. where ai-edge-litert is)
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "symbol"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in report.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and not line.startswith("#"):
            sym = " ".join(parts[2:])
            rows.append((float(parts[0][:-1]), sym.split("[abi")[0].removesuffix("- -").strip()))
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--out`` write) the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from bench.cputime import interleaved
    from bench.inference_extras import cached_aot
    from edge_agent.bundle_io import load_bundle
    from edge_agent.engine.engine import _NO_TRACE, _NO_TRACE_AT, Engine
    from kernels.build import cachepaths
    from kernels.plan.tables import W_BYTES

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        kernels, _ = cached_aot()
        bundle = load_bundle(args.bundle)
        engine = Engine(bundle, bits=8, kernels=kernels)
        st = engine._state
        rng = np.random.default_rng(0)
        cases: dict[str, tuple[Callable[[], Any], int]] = {}
        for n in (1, 64):
            x = rng.normal(size=(n, *bundle.input_shape)).astype(np.float32)
            xs = np.ascontiguousarray(x.reshape(n, -1))
            out = np.empty((n, bundle.num_classes), np.float32)
            work = np.empty(st.model.sizes[W_BYTES], np.uint8)
            cases[f"predict_logits/b{n}"] = (functools.partial(engine.predict_logits, x), n)
            cases[f"as_batch/b{n}"] = (functools.partial(engine._as_batch, x), n)
            cases[f"run_program/b{n}"] = (
                functools.partial(
                    kernels.run_program, xs, *st.args, out, _NO_TRACE, _NO_TRACE_AT, work
                ),
                n,
            )
        rates, info = interleaved(cases, args.seconds, reps=5)
        result["us_per_sample"] = {k: 1e6 / v["cpu_best"] for k, v in rates.items()}
        result["timing"] = info
        if shutil.which("perf"):
            result["perf"] = {
                f"b{n}": perf_top(cachepaths.aot_dir(), args.bundle, n, args.seconds, tmp)
                for n in (1, 64)
            }
    lines = ["| call | b1 us/sample | b64 us/sample |", "|---|---:|---:|"]
    for what in ("predict_logits", "as_batch", "run_program"):
        us = result["us_per_sample"]
        lines.append(f"| {what} | {us[f'{what}/b1']:.2f} | {us[f'{what}/b64']:.2f} |")
    lines.append(
        f"\nload average {result['timing']['loadavg_start'][0]:.1f}; best of 5 "
        "interleaved repetitions, thread CPU time"
    )
    for b, rows in result.get("perf", {}).items():
        lines.append(f"\nperf, run_program at {b}: " + "; ".join(f"{s} {p:.1f}%" for p, s in rows))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "engine_profile.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "engine_profile.md").write_text(
            f"# Engine per-call profile\n\n`python bench/engine_profile.py {args.bundle.name}`"
            f"\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
