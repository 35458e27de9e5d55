"""Per-layer cost of the engine against LiteRT (XNNPACK), by timing prefixes of a network.

    BENCH_TF_PYTHON=/path/to/tf/python python bench/layer_profile.py BUNDLE [BUNDLE ...]
        [--seconds 2] [--out bench/results]

For a bundle whose network is ``conv, [pool], conv, [pool], ..., gap, linear``, prefix
``L`` keeps the first ``L`` conv blocks (each with the pooling after it) and ends in
``gap, linear``; prefix 0 is ``gap, linear`` on the input alone (input quantization and
per-call overhead). Both runtimes run every prefix with the bundle's weights (the engine its
8-bit codes, LiteRT a full-integer conversion of the FP weights; the closing linear layer
of a shortened net has random weights), at batch 1 and 64, interleaved, by thread CPU
time. The difference of neighbouring prefixes is what conv block ``L`` (conv, fused or
separate pooling, and the change in the gap's input) costs in each runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_WEIGHTED = ("conv1d", "conv2d", "linear")


def prefix_layers(layers: list[dict[str, Any]], blocks: int, c_in: int) -> list[dict[str, Any]]:
    """The first ``blocks`` conv blocks of ``layers`` (pools included), then gap and linear."""
    out: list[dict[str, Any]] = []
    convs = 0
    c = c_in
    for op in layers:
        if op["op"] in ("conv1d", "conv2d"):
            if convs == blocks:
                break
            convs += 1
            c = int(op["out_ch"])
        elif op["op"] in ("gap", "linear", "flatten"):
            break
        out.append(dict(op))
    head = layers[-1]
    return [
        *out,
        {"op": "gap"},
        {"op": "linear", "in_features": c, "out_features": int(head["out_features"])},
    ]


def conv_blocks(layers: list[dict[str, Any]]) -> int:
    """Number of conv layers of a network."""
    return sum(op["op"] in ("conv1d", "conv2d") for op in layers)


def engine_case(bundle: Any, layers: list[dict[str, Any]], kernels: Any, batch: int) -> Any:
    """A call of the compiled program of ``layers`` at ``batch`` (8-bit bundle codes)."""
    from edge_agent.engine.engine import _NO_TRACE, _NO_TRACE_AT
    from edge_agent.engine.state import layer_params
    from kernels.plan import abi, program
    from kernels.plan.model import LayerParams
    from kernels.plan.tables import W_BYTES

    quant = bundle.quant[max(bundle.quant)]
    params = layer_params(quant)
    n = sum(op["op"] in _WEIGHTED for op in layers)
    kept = params[: n - 1]
    head = layers[-1]
    rng = np.random.default_rng(1)
    o, k = int(head["out_features"]), int(head["in_features"])
    in_zp = kept[-1].out_zp if kept else quant.input_zp
    last = LayerParams(
        q=rng.integers(-127, 128, size=(o, k)).astype(np.int8),
        bits=8,
        bias_q=np.zeros(o, np.int32),
        in_zp=int(in_zp or 0),
        out_mult=np.full(o, 1e-3, np.float32),
    )
    model, w = program.build_model(
        layers,
        bundle.input_shape,
        [*kept, last],
        bundle.norm_mean,
        bundle.norm_std,
        quant.input_scale,
        quant.input_zp,
        quant.act_bits,
        act_offset=kernels.act_offset,
    )
    params = (
        model.ops,
        model.tens,
        w.ltab,
        w.panel,
        w.bias,
        w.m0,
        w.shift,
        w.out_mult,
        model.mean,
        model.std,
        model.in_scale,
        model.in_zp,
        model.act_hi,
        model.sizes,
    )
    x = rng.normal(size=(batch, int(np.prod(bundle.input_shape)))).astype(np.float32)
    out = np.empty((batch, o), np.float32)
    work = np.empty(model.sizes[W_BYTES], np.uint8)

    held = (abi.descriptor(params), params)  # the descriptor and the arrays it points to

    def call() -> None:
        kernels.run_program(x, held[0], out, _NO_TRACE, _NO_TRACE_AT, work)

    return call


def litert_case(path: Path, shape: tuple[int, ...], batch: int) -> Callable[[], Any]:
    """A LiteRT call of the .tflite at ``path`` at ``batch``."""
    from bench import anchor_litert

    run = anchor_litert.runner(path, batch)
    x = anchor_litert.channels_last(
        np.random.default_rng(2).normal(size=(batch, *shape)).astype(np.float32)
    )
    return lambda: run(x)


def convert_prefix(bundle: Any, layers: list[dict[str, Any]], out: Path, tf_python: str) -> None:
    """Full-integer TFLite model of a prefix (bundle FP weights, random closing linear)."""
    from bench import anchor_litert

    n = sum(op["op"] in _WEIGHTED for op in layers)
    head = layers[-1]
    rng = np.random.default_rng(1)
    w_last = rng.normal(size=(head["out_features"], head["in_features"])).astype(np.float32)
    weights = [*bundle.fp_weights[: n - 1], (w_last, np.zeros(len(w_last), np.float32))]
    spec = {**bundle.arch, "layers": layers}
    calib = rng.normal(size=(64, *bundle.input_shape)).astype(np.float32)
    fp_logits = np.zeros((64, head["out_features"]), np.float32)
    anchor_litert.convert(spec, weights, calib, fp_logits, out, tf_python)


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--out`` write) the per-block table of every bundle."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from bench import anchor_litert
    from bench.cputime import interleaved
    from bench.inference_extras import cached_aot
    from edge_agent.bundle_io import load_bundle

    kernels, _ = cached_aot()
    tf_python = anchor_litert.default_tf_python()
    why = anchor_litert.missing(tf_python)
    if why:
        print(f"LiteRT unavailable: {why}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {}
    lines = [
        "| model | prefix (conv blocks) | engine b1 us | LiteRT b1 us | engine b64 us/sample "
        "| LiteRT b64 us/sample | block: engine b1 us | LiteRT b1 us | engine b64 us/sample "
        "| LiteRT b64 us/sample |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        for path in args.bundles:
            bundle = load_bundle(path)
            blocks = conv_blocks(bundle.arch["layers"])
            cases: dict[str, tuple[Callable[[], Any], int]] = {}
            for nb in range(blocks + 1):
                layers = prefix_layers(bundle.arch["layers"], nb, bundle.input_shape[0])
                tfl = Path(tmpdir) / f"{path.stem}_p{nb}.tflite"
                convert_prefix(bundle, layers, tfl, tf_python)
                for batch in (1, 64):
                    cases[f"engine/p{nb}/b{batch}"] = (
                        engine_case(bundle, layers, kernels, batch),
                        batch,
                    )
                    cases[f"litert/p{nb}/b{batch}"] = (
                        litert_case(tfl, bundle.input_shape, batch),
                        batch,
                    )
            rates, info = interleaved(cases, args.seconds * len(cases) / 4, reps=args.reps)
            us = {k: 1e6 / v["cpu_best"] for k, v in rates.items()}
            result[path.name] = {"us_per_sample": us, "timing": info}
            for nb in range(blocks + 1):
                keys = [(rt, b) for b in (1, 64) for rt in ("engine", "litert")]
                row = [us[f"{rt}/p{nb}/b{b}"] for rt, b in keys]
                if nb:
                    prev = [us[f"{rt}/p{nb - 1}/b{b}"] for rt, b in keys]
                    diff = [f"{a - p:.2f}" for a, p in zip(row, prev, strict=True)]
                else:
                    diff = ["(input, gap, linear, call)"] + [""] * 3
                lines.append(
                    f"| {path.stem} | {nb} | "
                    + " | ".join(f"{v:.2f}" for v in row)
                    + " | "
                    + " | ".join(diff)
                    + " |"
                )
            lines.append(
                f"| {path.stem} | load average {info['loadavg_start'][0]:.1f} -> "
                f"{info['loadavg_end'][0]:.1f} | | | | | | | | |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "layer_profile.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "layer_profile.md").write_text(
            "# Per-layer cost: engine vs LiteRT (XNNPACK), by network prefixes\n\n"
            f"`python bench/layer_profile.py {' '.join(p.name for p in args.bundles)}`\n\n"
            "Best of the interleaved repetitions, thread CPU time, one thread, AOT kernels; "
            "block = this prefix minus the previous one.\n\n" + text + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
