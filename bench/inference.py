"""Inference benchmark: the integer engine against torch and onnxruntime, one thread.

    python bench/inference.py [--bundle PATH] [--data basicmotions] [--seconds 1.0] [--json]
                              [--out bench/results]

Without ``--bundle`` a small BasicMotions model (8/4/2 bits) is trained first. Every
runtime runs the same trained model: torch FP32 eager (the folded FP network), torch int8
(torch.ao FX static quantization, x86 backend), onnxruntime FP32 and int8 (static,
QOperator), and the engine at each bit-width with its kernels compiled ahead of time
(AOT, built here into a temporary kernel cache) and JIT-compiled by numba, at batch 1 and
64, taking turns in rounds (best round kept) so that all see the same load of a shared
machine. Also reported: peak RSS and first-sample latency of an engine-only child process
(torch never imported) with either kind of kernels, model bytes per bit-width, and a
256x256x256 GEMM in GMAC/s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.bundle import Bundle  # noqa: E402
from edge_agent.bundle_io import load_bundle, save_bundle  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.engine.engine import Engine  # noqa: E402
from kernels.build import aot  # noqa: E402
from kernels.exec import backend  # noqa: E402

log = logging.getLogger("bench.inference")
BATCHES = (1, 64)
BACKENDS = ("aot", "jit")


def round_robin(
    cases: dict[str, tuple[Callable[[], Any], int]], seconds: float, rounds: int = 7
) -> dict[str, float]:
    """Items per second of each case (``fn`` handling ``items`` items): best of ``rounds``.

    The cases take turns, ``seconds / rounds`` each per round, so that every runtime sees
    the same mix of quiet and busy moments of a shared machine; ratios come from one run.
    """
    best = dict.fromkeys(cases, 0.0)
    for fn, _ in cases.values():
        fn()
    for _ in range(rounds):
        for name, (fn, items) in cases.items():
            n = 0
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / rounds or n < 2:
                fn()
                n += 1
            best[name] = max(best[name], n * items / elapsed)
    return best


def train_bundle(data: str, path: Path) -> Bundle:
    """Train a small model at 8, 4 and 2 bits (the lead's training API) and save it."""
    from edge_agent.training.arch import default_spec
    from edge_agent.training.export import build_bundle
    from edge_agent.training.fit import TrainConfig, fit

    ds = load_dataset(data)
    spec = default_spec(ds.input_shape, ds.num_classes)
    fp, qnets, metrics = fit(
        ds, spec, [8, 4, 2], seed=0, cfg=TrainConfig(fp_steps=300, qat_steps=100, progress=False)
    )
    bundle = build_bundle(ds, spec, fp, qnets, {"seed": 0, "metrics": metrics})
    save_bundle(bundle, path)
    return bundle


def fp_net(bundle: Bundle) -> Any:
    """The folded FP32 torch network of a bundle."""
    import torch

    from edge_agent.training.arch import FPNet

    net = FPNet(bundle.arch, folded=True).eval()
    with torch.no_grad():
        for layer, (w, b) in zip(net.weighted_layers(), bundle.fp_weights, strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    return net


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


def onnx_runners(net: Any, calib: np.ndarray, tmp: Path) -> dict[str, Callable[[np.ndarray], Any]]:
    """onnxruntime FP32 and int8 (static, QOperator) sessions on one thread."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32 = tmp / "model.onnx"
    int8 = tmp / "model.int8.onnx"
    torch.onnx.export(
        net,
        (torch.from_numpy(calib[:1]),),
        str(fp32),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    runners = {}
    for name, path in (("ort_fp32", fp32), ("ort_int8", int8)):
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        runners[name] = (lambda s: lambda x: s.run(None, {"x": x}))(sess)
    return runners


def gemm_bench(seconds: float) -> dict[str, float]:
    """GMAC/s of a 256x256x256 product: engine kernel (8/4/2 bits, requantized uint8 output
    as in hidden layers), numpy FP32, ORT int8 ``MatMulInteger`` (int32 output)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kernels.codegen.gemm import gemm_rows, identity_map
    from kernels.plan import layout

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
            np.empty(128, np.int32),
        )
        cases[f"engine_{bits}bit"] = (lambda args=args: gemm_rows(*args), macs)
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
    return {name: v / 1e9 for name, v in round_robin(cases, seconds * len(cases)).items()}


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
xb = np.random.default_rng(0).normal(size=(64, *e.input_shape)).astype(np.float32)
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
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(bundle_path), kernels],
        cwd=ROOT,
        env={**os.environ, **env, "EDGE_AGENT_KERNELS": kernels},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def numba_import_rss_mb() -> float:
    """Peak RSS of a process that only imports numba."""
    base = subprocess.run(
        [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
    )
    return float(base.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or one JSON object with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bundle",
        type=Path,
        help="bundle file; trained (BasicMotions, 8/4/2 bits) and saved if missing",
    )
    parser.add_argument("--data", default="basicmotions", help="data set for calibration")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out", type=Path, help="also write inference.json and inference.md into this directory"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    warnings.filterwarnings("ignore")  # deprecation chatter of torch.ao and the ONNX exporter

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bundle_path = args.bundle or tmp / "bench.eab"
        if bundle_path.exists():
            bundle = load_bundle(bundle_path)
        else:
            bundle = train_bundle(args.data, bundle_path)
        ds = load_dataset(args.data)
        mean = bundle.norm_mean.reshape(1, -1, *(1,) * (len(bundle.input_shape) - 1))
        std = bundle.norm_std.reshape(mean.shape)
        raw = ds.X_test.astype(np.float32)
        reps = -(-64 // len(raw))
        raw = np.concatenate([raw] * reps)[:64]
        normed = ((raw - mean) / std).astype(np.float32)
        calib = ((ds.X_train[:64].astype(np.float32) - mean) / std).astype(np.float32)

        kernel_cache = tmp / "kernel-cache"  # the AOT child finds the module here
        start = time.perf_counter()
        aot.build(kernel_cache / "aot")
        aot_build_s = time.perf_counter() - start
        kernels = {
            "aot": backend.load("aot", aot_dir=kernel_cache / "aot"),
            "jit": backend.load("jit"),
        }
        engine = Engine(bundle, kernels=kernels["jit"])
        engine.warmup()  # fills the JIT cache, so the JIT child measures a warm start
        children = {
            "aot": engine_child(bundle_path, "aot", {"EDGE_AGENT_JIT_CACHE": str(kernel_cache)}),
            "jit": engine_child(bundle_path, "jit", {}),
        }
        runners: dict[str, tuple[Callable[[np.ndarray], Any], np.ndarray]] = {}
        for name in BACKENDS:
            for b in sorted(engine.available_bits, reverse=True):
                runners[f"engine_{name}_{b}bit"] = (
                    Engine(bundle, bits=b, kernels=kernels[name]).predict_logits,
                    raw,
                )
        net = fp_net(bundle)
        for name, fn in torch_runners(net, calib).items():
            runners[name] = (fn, normed)
        for name, fn in onnx_runners(net, calib, tmp).items():
            runners[name] = (fn, normed)

        cases: dict[str, tuple[Callable[[], Any], int]] = {}
        for name, (fn, data) in runners.items():
            for n in BATCHES:
                batch = np.ascontiguousarray(data[:n])
                cases[f"{name}/b{n}"] = ((lambda fn=fn, batch=batch: fn(batch)), n)
        rates = round_robin(cases, args.seconds * len(cases))
        sps = {name: {f"b{n}": rates[f"{name}/b{n}"] for n in BATCHES} for name in runners}
        gemm = gemm_bench(args.seconds)

    main_engine = f"engine_aot_{max(engine.available_bits)}bit"
    result: dict[str, Any] = {
        "model": bundle.arch.get("name"),
        "input_shape": list(bundle.input_shape),
        "kernel_isa": engine.isa,
        "aot_build_s": aot_build_s,
        "samples_per_s": sps,
        "ratio_vs_ort_int8_b1": sps[main_engine]["b1"] / sps["ort_int8"]["b1"],
        "ratio_vs_ort_int8_b64": sps[main_engine]["b64"] / sps["ort_int8"]["b64"],
        "ratio_vs_torch_fp32_b1": sps[main_engine]["b1"] / sps["torch_fp32"]["b1"],
        "ratios_per_bits": {
            name: {
                f"vs_{peer}_b{n}": sps[name][f"b{n}"] / sps[peer][f"b{n}"]
                for peer in ("ort_int8", "torch_fp32", "torch_int8")
                for n in BATCHES
            }
            for name in sps
            if name.startswith("engine_")
        },
        "aot_vs_jit": {
            f"{b}bit": {
                f"b{n}": sps[f"engine_aot_{b}bit"][f"b{n}"] / sps[f"engine_jit_{b}bit"][f"b{n}"]
                for n in BATCHES
            }
            for b in sorted(engine.available_bits, reverse=True)
        },
        "engine_rss_mb": children["aot"]["rss_mb"],
        "engine_rss_mb_jit": children["jit"]["rss_mb"],
        "engine_process": children,
        "numba_import_rss_mb": numba_import_rss_mb(),
        "model_bytes": {str(b): q.weight_bytes() for b, q in sorted(bundle.quant.items())},
        "kernel_panel_bytes": {str(b): engine.weight_bytes(b) for b in engine.available_bits},
        "gemm_256_gmac_s": gemm,
    }
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


def markdown(r: dict[str, Any]) -> str:
    """The report as a markdown table and notes (what the README shows)."""
    sps = r["samples_per_s"]
    main_engine = f"engine_aot_{max(int(b) for b in r['model_bytes'])}bit"
    lines = [
        f"Model `{r['model']}` {r['input_shape']}, one thread, engine kernels: "
        f"`{r['kernel_isa']}`, compiled ahead of time (aot) or by numba's JIT (jit); "
        "samples/s, best of the rounds of one run.",
        "",
        "| runtime | batch 1 /s | batch 64 /s | engine aot 8-bit / this, b1 | b64 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in sps.items():
        ratio = [sps[main_engine][f"b{n}"] / v[f"b{n}"] for n in BATCHES]
        lines.append(
            f"| {name} | {v['b1']:,.0f} | {v['b64']:,.0f} | {ratio[0]:.2f}x | {ratio[1]:.2f}x |"
        )
    lines.append("")
    for name, what in (("aot", "AOT kernels"), ("jit", "JIT kernels, cache warm")):
        p = r["engine_process"][name]
        lines.append(
            f"- engine-only process, {what} (bundle loaded, inference run; of torch, numba "
            f"and llvmlite it imported: {', '.join(p['imported']) or 'none'}): peak RSS "
            f"{p['rss_mb']:.1f} MB (at exit {p['rss_anon_mb']:.1f} MB private + "
            f"{p['rss_file_mb']:.1f} MB file-backed); start {p['start_s']:.2f} s, first sample "
            f"{p['first_sample_ms']:.1f} ms"
        )
    lines += [
        f"- `import numba` alone peaks at {r['numba_import_rss_mb']:.1f} MB; building the AOT "
        f"module took {r['aot_build_s']:.1f} s",
        "- engine aot / jit, samples/s: "
        + ", ".join(
            f"{b} {v['b1']:.2f}x (b1) {v['b64']:.2f}x (b64)" for b, v in r["aot_vs_jit"].items()
        ),
        "- model bytes (bundle, packed rows): "
        + ", ".join(f"{b}-bit {n:,}" for b, n in r["model_bytes"].items()),
        "- GEMM 256x256x256, GMAC/s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["gemm_256_gmac_s"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
