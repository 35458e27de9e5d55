"""Inference benchmark: the integer engine against LiteRT, onnxruntime and torch, one thread.

    python bench/inference.py [--seconds 1.5] [--reps 5] [--models DIR] [--tf-python PY]
                              [--only default,wide,digits] [--no-noamx] [--json]
                              [--out bench/results]

Three models (:mod:`bench.inference_models`): the default BasicMotions sensor CNN, the same
4x wider, and the digits image CNN, trained once and cached in ``--models``. Each runs on
the engine (kernels compiled ahead of time, built here into a temporary cache; at 8, 4 and
2 bits and JIT-compiled for the default model), LiteRT int8 (full-integer post-training
quantization, XNNPACK, one thread; :mod:`bench.anchor_litert` says how to install it),
onnxruntime int8 (all-int8 graph, :mod:`bench.anchor_onnx`) and FP32, torch FP32 eager,
and for the default model torch int8 (torch.ao, x86) and onnxruntime int8 as this bench
built it before (global average pooling left in float).

Timing (:mod:`bench.cputime`): thread CPU time, all runtimes of a model interleaved in one
process, ``--reps`` repetitions; ratios are engine rate / anchor rate of the median
repetitions (best-repetition ratios are in the JSON too). Wall-clock rates and load
averages are printed beside them. The engine and the int8 anchors are timed again in a
child process that refuses itself AMX (:mod:`bench.noamx`): the ``_noamx`` keys. Also:
agreement of every runtime's predictions with the engine's (8-bit) on the test split, the
op types each anchor runs, peak RSS of an engine-only process (torch never imported),
model bytes and a 256x256x256 GEMM.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import anchor_litert, anchor_onnx, inference_timing  # noqa: E402
from bench.inference_extras import (  # noqa: E402
    cached_aot,
    engine_child,
    gemm_bench,
    numba_import_rss_mb,
    torch_runners,
)
from bench.inference_models import MODELS, Prepared, fp_net, prepare  # noqa: E402
from bench.inference_report import markdown  # noqa: E402
from bench.inference_timing import BATCHES, Runtime  # noqa: E402
from bench.noamx import amx_state  # noqa: E402
from kernels.build import cachepaths  # noqa: E402
from kernels.exec import backend  # noqa: E402

log = logging.getLogger("bench.inference")
ANCHORS = ("litert_int8", "ort_int8", "ort_fp32", "torch_fp32", "torch_int8", "ort_int8_floatgap")


def runtimes_for(p: Prepared, kernels: dict[str, Any]) -> dict[str, Runtime]:
    """Every runtime of one model, each with its inputs at each batch."""
    rts: dict[str, Runtime] = {}
    bits = sorted(p.bundle.quant, reverse=True)
    for b in bits:
        rts[f"engine_aot_{b}bit"] = inference_timing.engine_runtime(
            p.bundle_path, b, kernels["aot"], p.raw
        )
    if p.case.name == "default":
        rts["engine_jit_8bit"] = inference_timing.engine_runtime(
            p.bundle_path, 8, kernels["jit"], p.raw
        )
    if p.tflite is not None:
        rts["litert_int8"] = inference_timing.litert_runtime(p.tflite, p.normed)
    rts["ort_int8"] = inference_timing.ort_runtime(p.onnx_int8["best"], p.normed)
    rts["ort_fp32"] = inference_timing.ort_runtime(p.onnx_fp32, p.normed)
    net = fp_net(p.bundle)  # with the training code's GAP (flatten + mean)
    torch_fns = torch_runners(net, p.normed)
    rts["torch_fp32"] = {n: (torch_fns["torch_fp32"], p.normed[:n]) for n in BATCHES}
    if p.case.name == "default":
        rts["torch_int8"] = {n: (torch_fns["torch_int8"], p.normed[:n]) for n in BATCHES}
        assert p.anchor_dir is not None
        old = p.anchor_dir / "floatgap" / "floatgap.int8.onnx"  # cached beside the others
        if not old.exists():
            old = anchor_onnx.float_gap_int8(net, p.normed, p.anchor_dir / "floatgap")
        rts["ort_int8_floatgap"] = inference_timing.ort_runtime(old, p.normed)
    return rts


def agreement(p: Prepared, rts: dict[str, Runtime]) -> dict[str, dict[str, float]]:
    """Per runtime: share of test samples where its top class equals the 8-bit engine's,
    and its accuracy (every forward function but LiteRT's takes any batch size)."""
    from edge_agent.data import load_dataset

    labels = load_dataset(p.case.data).y_test
    ref = None
    out: dict[str, dict[str, float]] = {}
    for name in ["engine_aot_8bit", *[a for a in ANCHORS if a in rts]]:
        if name == "litert_int8":
            assert p.tflite is not None
            x = anchor_litert.channels_last(p.test_normed)
            pred = anchor_litert.runner(p.tflite, len(x))(x)
        else:
            pred = rts[name][1][0](p.test_raw if name.startswith("engine") else p.test_normed)
        top = np.asarray(pred).argmax(axis=1)
        ref = top if ref is None else ref
        out[name] = {
            "agreement": float((top == ref).mean()),
            "accuracy": float((top == labels).mean()),
        }
    return out


def _plan(prepared: list[Prepared], aot_dir: Path, tmp: Path, seconds: float, reps: int) -> Path:
    """Write the child timing process's plan (models, inputs, timing) and return its path."""
    plan: dict[str, Any] = {"aot_dir": str(aot_dir), "seconds": seconds, "reps": reps, "models": {}}
    for p in prepared:
        np.save(tmp / f"{p.case.name}.raw.npy", p.raw)
        np.save(tmp / f"{p.case.name}.normed.npy", p.normed)
        plan["models"][p.case.name] = {
            "bundle": str(p.bundle_path),
            "onnx_int8": str(p.onnx_int8["best"]),
            "tflite": str(p.tflite) if p.tflite else None,
            "raw": str(tmp / f"{p.case.name}.raw.npy"),
            "normed": str(tmp / f"{p.case.name}.normed.npy"),
        }
    path = tmp / f"plan-{seconds}-{reps}.json"
    path.write_text(json.dumps(plan))
    return path


def child_timing(
    plan: Path, tmp: Path, noamx: bool, prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Time the engine and int8 anchors in a child process (refusing AMX with ``noamx``)."""
    out_path = tmp / "child.json"
    args = [
        *prefix,
        sys.executable,
        str(ROOT / "bench" / "inference_timing.py"),
        str(plan),
        str(out_path),
    ] + (["--noamx"] if noamx else [])
    subprocess.run(
        args,
        cwd=ROOT,
        check=True,
        # the repository first, then what this process was given (e.g. where ai-edge-litert is)
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=bool(prefix),
    )
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def amx_requests(prepared: list[Prepared], aot_dir: Path, tmp: Path) -> int | None:
    """How many times the engine and the int8 anchors ask the kernel for AMX tile data
    (``arch_prctl(ARCH_REQ_XCOMP_PERM)``) while running every model: a short child run
    under ``strace``; None without strace. A library that never asks never uses AMX."""
    if shutil.which("strace") is None:
        return None
    log_file = tmp / "strace.txt"
    plan = _plan(prepared, aot_dir, tmp, 0.01, 1)
    child_timing(
        plan, tmp, False, ("strace", "-f", "-qq", "-e", "trace=arch_prctl", "-o", str(log_file))
    )
    text = log_file.read_text()
    return text.count("0x1023") + text.count("ARCH_REQ_XCOMP_PERM")


def ratios(
    rates: dict[str, dict[str, dict[str, float]]],
    engine: str = "engine_aot_8bit",
    stat: str = "cpu_median",
) -> dict[str, float]:
    """engine rate / anchor rate for every other runtime and batch."""
    return {
        f"vs_{name}_b{n}": rates[engine][f"b{n}"][stat] / v[f"b{n}"][stat]
        for name, v in rates.items()
        if name != engine
        for n in BATCHES
    }


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children so far: what
    the run costs, whatever the load (its wall time grows with the machine's load)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or one JSON object with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="thread CPU seconds per runtime and batch, over all repetitions",
    )
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache" / "edge-agent" / "bench-models",
        help="where trained bundles are cached",
    )
    parser.add_argument(
        "--tf-python",
        default=anchor_litert.default_tf_python(),
        help="a Python with tensorflow-cpu, for the TFLite converter",
    )
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--no-noamx", action="store_true", help="skip the no-AMX child run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out", type=Path, help="also write inference.json and inference.md into this directory"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    warnings.filterwarnings("ignore")  # deprecation chatter of torch.ao and the ONNX exporter
    started = time.perf_counter()
    phases: dict[str, float] = {}  # wall seconds per stage of the run
    cases = [m for m in MODELS if not args.only or m.name in args.only.split(",")]
    litert_missing = anchor_litert.missing(args.tf_python)
    if litert_missing:
        print(f"LiteRT anchor skipped: {litert_missing}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        prepared = [prepare(c, args.models, args.tf_python, litert_missing) for c in cases]
        phases["prepare"] = time.perf_counter() - started
        t0 = time.perf_counter()
        aot_kernels, aot_build_s = cached_aot()
        kernel_cache = cachepaths.cache_root()  # the AOT child finds the module there too
        aot_dir = cachepaths.aot_dir(kernel_cache)
        kernels = {"aot": aot_kernels, "jit": backend.load("jit")}
        phases["aot"] = time.perf_counter() - t0
        from edge_agent.engine.engine import Engine

        t0 = time.perf_counter()
        main_bundle = prepared[0]
        Engine(main_bundle.bundle, kernels=kernels["jit"]).warmup()  # JIT cache for the child
        phases["jit_warmup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        children = {
            "aot": engine_child(
                main_bundle.bundle_path, "aot", {"EDGE_AGENT_JIT_CACHE": str(kernel_cache)}
            ),
            "jit": engine_child(main_bundle.bundle_path, "jit", {}),
        }
        phases["engine_children"] = time.perf_counter() - t0
        models: dict[str, Any] = {}
        for p in prepared:
            t0 = time.perf_counter()
            rts = runtimes_for(p, kernels)
            agree = agreement(p, rts)
            rates, timing = inference_timing.time_runtimes(rts, args.seconds, args.reps)
            best = [k for k, v in p.onnx_int8.items() if k != "best" and v == p.onnx_int8["best"]]
            models[p.case.name] = {
                "data": p.case.data,
                "width": p.case.width,
                "macs": p.macs,
                "input_shape": list(p.bundle.input_shape),
                "rates": rates,
                "timing": timing,
                "ratios": ratios(rates),
                "ratios_best": ratios(rates, stat="cpu_best"),
                "ratios_wall": ratios(rates, stat="wall_median"),
                "agreement": agree,
                "onnx_int8_format": best[0],
                "onnx_ops": p.onnx_ops,
                "onnx_float_ops": anchor_onnx.int8_float_ops(p.onnx_ops),
                "tflite_ops": p.tflite_ops,
                "tflite_twin_max_abs_err": p.twin_err,
                "model_bytes": {
                    str(b): q.weight_bytes() for b, q in sorted(p.bundle.quant.items())
                },
            }
            phases[f"time_{p.case.name}"] = time.perf_counter() - t0
        amx_main: dict[str, Any] = dict(amx_state())
        noamx = None
        t0 = time.perf_counter()
        if not args.no_noamx:
            plan = _plan(prepared, aot_dir, tmp, args.seconds, args.reps)
            noamx = child_timing(plan, tmp, True)
        phases["noamx_child"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        amx_main["requests_seen"] = amx_requests(prepared, aot_dir, tmp)
        phases["amx_strace"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gemm = gemm_bench(args.seconds)
        phases["gemm"] = time.perf_counter() - t0

    result: dict[str, Any] = {
        "clock": "thread_cpu",
        "kernel_isa": kernels["aot"].isa,
        "models": models,
        "amx": {"main": amx_main},
    }
    suffix = {"default": "", "wide": "_wide", "digits": "_digits"}
    for name, m in models.items():
        s = suffix[name]
        for n in BATCHES:
            for anchor in ("litert_int8", "ort_int8"):
                if f"vs_{anchor}_b{n}" in m["ratios"]:
                    result[f"ratio_vs_{anchor}{s}_b{n}"] = m["ratios"][f"vs_{anchor}_b{n}"]
        if noamx is not None:
            r = ratios(noamx["models"][name]["rates"])
            m["ratios_noamx"] = r
            m["rates_noamx"] = noamx["models"][name]["rates"]
            for n in BATCHES:
                for anchor in ("litert_int8", "ort_int8"):
                    if f"vs_{anchor}_b{n}" in r:
                        result[f"ratio_vs_{anchor}{s}_b{n}_noamx"] = r[f"vs_{anchor}_b{n}"]
    if "default" in models:
        result["ratio_vs_torch_fp32_b1"] = models["default"]["ratios"]["vs_torch_fp32_b1"]
    if noamx is not None:
        result["amx"]["noamx_child"] = noamx["amx"]
    result.update(
        {
            "engine_rss_mb": children["aot"]["rss_mb"],
            "engine_rss_mb_jit": children["jit"]["rss_mb"],
            "engine_process": children,
            "numba_import_rss_mb": numba_import_rss_mb(),
            "aot_build_s": aot_build_s,  # None: the module of these sources was reused
            "phase_s": phases,
            "gemm_256_gmac_s": gemm,
            "total_s": time.perf_counter() - started,
            "total_cpu_s": _cpu_seconds(),
            "loadavg_end": list(os.getloadavg()),
        }
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "inference.json").write_text(json.dumps(result, indent=2) + "\n")
        command = "python bench/inference.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        (args.out / "inference.md").write_text(
            f"# Inference benchmark\n\n`{command.strip()}`\n\n{markdown(result)}\n"
        )
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
