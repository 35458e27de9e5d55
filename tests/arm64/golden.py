"""Golden integer results of the bundled model: computed on one machine, checked on another.

``compute`` runs the bundled default model (``edge_agent/defaults/basicmotions.eab``) with
the numba engine and the numpy reference at every bit-width of the bundle, on the
vendored BasicMotions samples plus seeded out-of-range inputs, and writes the inputs and
all results to an ``.npz``. ``check`` recomputes the same on the current machine from the
stored inputs and fails unless everything is identical bit for bit: float32 logits are
compared as their uint32 bit patterns (so one ulp, -0.0 vs 0.0 or a NaN payload counts),
predicted classes and the weight codes the engine holds as integers.

Usage (the host computes, the emulated arm64 board checks):
    python tests/arm64/golden.py compute GOLDEN.npz
    python tests/arm64/golden.py check GOLDEN.npz [--expect-isa ISA]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXTRA_SEED = 20240607
EXTRA_SAMPLES = 24


def bundle_path() -> Path:
    """The bundled default model, from the installed package if present, else the checkout."""
    import edge_agent

    return Path(edge_agent.__file__).resolve().parent / "defaults" / "basicmotions.eab"


def golden_inputs() -> np.ndarray:
    """The vendored BasicMotions samples (train then test) and seeded hard inputs.

    The extra inputs are scaled up to drive the input quantizer into both clamps and the
    accumulators far from zero, where rounding differences would show first.
    """
    from edge_agent.data import load_dataset

    ds = load_dataset("basicmotions")
    x = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
    rng = np.random.default_rng(EXTRA_SEED)
    scale = np.float32(4.0) * x.std(axis=(0, 2), keepdims=True)
    extra = (rng.standard_normal((EXTRA_SAMPLES, *x.shape[1:])) * scale).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([x, extra]))


def results(x: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    """Engine and reference results of the bundle at ``path`` for inputs ``x``."""
    from edge_agent.bundle_io import load_bundle
    from edge_agent.engine import reference
    from edge_agent.engine.engine import Engine

    bundle = load_bundle(path)
    engine = Engine(bundle)
    out: dict[str, np.ndarray] = {}
    for bits in engine.available_bits:
        engine.set_bits(bits)
        quant = bundle.quant[bits]
        logits = engine.predict_logits(x)
        classes, _ = engine.predict(x)
        ref = reference.forward(
            bundle.arch["layers"],
            quant,
            bundle.norm_mean,
            bundle.norm_std,
            x.reshape(len(x), *bundle.input_shape),
        )
        out[f"engine_logits_{bits}"] = np.asarray(logits, dtype=np.float32)
        out[f"engine_classes_{bits}"] = np.asarray(classes, dtype=np.int64)
        out[f"reference_logits_{bits}"] = np.asarray(ref, dtype=np.float32)
        for i in range(len(quant.layers)):
            out[f"codes_{bits}_{i}"] = engine.layer_codes(i, bits)
    return out


def compare(golden: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    """Every difference between two result sets (empty when identical bit for bit)."""
    problems = []
    for key in sorted(set(golden) | set(actual)):
        if key not in actual:
            problems.append(f"{key}: missing here")
            continue
        if key not in golden:
            problems.append(f"{key}: not in the golden file")
            continue
        g, a = np.asarray(golden[key]), np.asarray(actual[key])
        if g.dtype != a.dtype or g.shape != a.shape:
            problems.append(
                f"{key}: {a.dtype}{a.shape} here, {g.dtype}{g.shape} in the golden file"
            )
            continue
        if g.dtype.kind == "f":  # compare the bit patterns, not the values
            g = g.view(np.dtype(f"u{g.dtype.itemsize}"))
            a = a.view(np.dtype(f"u{a.dtype.itemsize}"))
        diff = np.argwhere(g != a)
        if len(diff):
            first = tuple(int(v) for v in diff[0])
            problems.append(
                f"{key}: {len(diff)} element(s) differ, first at {first}: "
                f"{np.asarray(actual[key])[first]!r} here, "
                f"{np.asarray(golden[key])[first]!r} in the golden file"
            )
    for key in sorted(actual):  # the engine must also agree with the reference here
        if key.startswith("engine_logits_"):
            ref = actual.get("reference_" + key[len("engine_") :])
            e = np.asarray(actual[key])
            if (
                ref is None
                or ref.shape != e.shape
                or not np.array_equal(
                    e.view(np.uint32), np.asarray(ref, dtype=np.float32).view(np.uint32)
                )
            ):
                problems.append(f"{key}: engine and reference disagree on this machine")
    return problems


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cmd_compute(out: Path) -> int:
    from kernels.codegen.isa import ACTIVE_ISA

    path = bundle_path()
    x = golden_inputs()
    res = results(x, path)
    meta = {"bundle_sha256": _sha256(path), "machine": platform.machine(), "isa": ACTIVE_ISA}
    np.savez_compressed(
        out, inputs=x, meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8), **res
    )
    print(
        f"golden: {len(x)} inputs, {len(res)} result arrays from {path} on "
        f"{meta['machine']} ({meta['isa']}) -> {out}"
    )
    return 0


def cmd_check(golden_file: Path, expect_isa: str | None) -> int:
    from kernels.codegen.isa import ACTIVE_ISA

    with np.load(golden_file, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data.pop("meta_json")).decode())
    x = data.pop("inputs")
    path = bundle_path()
    if _sha256(path) != meta["bundle_sha256"]:
        print(f"FAIL: {path} is not the bundle the golden file was computed from", file=sys.stderr)
        return 1
    isa = ACTIVE_ISA
    if expect_isa and isa != expect_isa:
        print(
            f"FAIL: the engine chose the {isa!r} kernels, expected {expect_isa!r}", file=sys.stderr
        )
        return 1
    problems = compare(data, results(x, path))
    where = f"{platform.machine()} ({isa} kernels) vs {meta['machine']} ({meta['isa']} kernels)"
    if problems:
        print(f"FAIL: {len(problems)} difference(s), {where}:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"OK: {len(data)} result arrays on {len(x)} inputs identical bit for bit, {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("compute").add_argument("golden", type=Path)
    c = sub.add_parser("check")
    c.add_argument("golden", type=Path)
    c.add_argument("--expect-isa", help="fail unless the engine selected these kernels")
    args = p.parse_args(argv)
    if args.cmd == "compute":
        return cmd_compute(args.golden)
    return cmd_check(args.golden, args.expect_isa)


if __name__ == "__main__":
    sys.exit(main())
