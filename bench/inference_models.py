"""The models of ``bench/inference.py``: trained (or cached), exported to every anchor, checked.

Three models: the default BasicMotions sensor CNN, the same 4x wider, and the digits
image CNN. Trained bundles are cached in ``--models`` (keyed by data set, width, bits and
training steps) so reruns time the same weights, and so are their anchor conversions
(ONNX FP32 and int8, TFLite; keyed by the bundle's contents and the converting code);
timings never depend on the cache.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import anchor_litert, anchor_onnx
from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.data import load_dataset
from kernels.digest import file_sha256, sha256

log = logging.getLogger("bench.inference")


@dataclass(frozen=True)
class ModelCase:
    """One benchmarked model: data set, width multiplier of the default architecture, bits."""

    name: str
    data: str
    width: int | None  # None: the architecture's default width
    bits: tuple[int, ...]
    fp_steps: int = 300
    qat_steps: int = 100


MODELS = (
    ModelCase("default", "basicmotions", None, (8, 4, 2)),
    ModelCase("wide", "basicmotions", 128, (8,)),
    ModelCase("digits", "digits", None, (8,)),
)


@dataclass
class Prepared:
    """A model with its inputs and every anchor's files."""

    case: ModelCase
    bundle_path: Path
    bundle: Bundle
    raw: np.ndarray  # float test inputs as the engine gets them (64 samples)
    normed: np.ndarray  # normalized, as the anchors get them (NCHW / NCT)
    test_raw: np.ndarray  # the whole test split
    test_normed: np.ndarray
    macs: int
    onnx_fp32: Path
    onnx_int8: dict[str, Path]  # qdq, qoperator, and "best"
    onnx_ops: dict[str, int]
    tflite: Path | None
    tflite_ops: dict[str, int] = field(default_factory=dict)
    twin_err: float | None = None
    anchor_dir: Path | None = None  # where the anchor files are cached


def spec_of(case: ModelCase, ds: Any) -> dict[str, Any]:
    """The architecture of a case (the default one, at the case's width)."""
    from edge_agent.training.arch import default_spec, image_cnn, sensor_cnn

    if case.width is None:
        return default_spec(ds.input_shape, ds.num_classes)
    build = sensor_cnn if len(ds.input_shape) == 2 else image_cnn
    return build(ds.input_shape, ds.num_classes, width=case.width)


def train(case: ModelCase, path: Path) -> Bundle:
    """Train a case's model (FP then QAT at its bit-widths) and save its bundle."""
    from edge_agent.training.export import build_bundle
    from edge_agent.training.fit import TrainConfig, fit

    ds = load_dataset(case.data)
    spec = spec_of(case, ds)
    fp, qnets, metrics = fit(
        ds,
        spec,
        list(case.bits),
        seed=0,
        cfg=TrainConfig(fp_steps=case.fp_steps, qat_steps=case.qat_steps, progress=False),
    )
    bundle = build_bundle(ds, spec, fp, qnets, {"seed": 0, "metrics": metrics})
    save_bundle(bundle, path)
    return bundle


def macs(spec: dict[str, Any]) -> int:
    """Multiply-accumulates of one sample through the weighted layers."""
    shape = list(spec["input_shape"])
    h, w = (1, shape[1]) if len(shape) == 2 else shape[1:]
    total = 0
    for op in spec["layers"]:
        kind = op["op"]
        if kind in ("conv1d", "conv2d"):
            k = (1, op["kernel"]) if kind == "conv1d" else tuple(op["kernel"])
            s = (1, op.get("stride") or 1) if kind == "conv1d" else tuple(op["stride"])
            p = (0, op["padding"]) if kind == "conv1d" else tuple(op["padding"])
            h = (h + 2 * p[0] - k[0]) // s[0] + 1
            w = (w + 2 * p[1] - k[1]) // s[1] + 1
            total += h * w * op["out_ch"] * op["in_ch"] * k[0] * k[1]
        elif kind.startswith("maxpool"):
            k = (1, op["kernel"]) if kind == "maxpool1d" else tuple(op["kernel"])
            s = (
                (1, op.get("stride") or op["kernel"])
                if kind == "maxpool1d"
                else tuple(op["stride"])
            )
            h, w = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
        elif kind == "linear":
            total += op["in_features"] * op["out_features"]
    return total


def fp_net(bundle: Bundle) -> Any:
    """The folded FP32 torch network of a bundle."""
    import torch

    from edge_agent.training.arch import FPNet

    net = FPNet(bundle.arch, folded=True).eval()
    with torch.no_grad():
        for layer, (w, b) in zip(net.weighted_layers(), bundle.fp_weights, strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))  # type: ignore[union-attr]
    return net


ANCHOR_SOURCES = ("inference_models.py", "anchor_onnx.py", "anchor_litert.py", "tflite_convert.py")


def anchor_dir(models_dir: Path, case: ModelCase, bundle_path: Path) -> Path:
    """Where a bundle's anchor files are cached: named after the bundle file's SHA-256, the
    sources that convert it and the converters' versions, so any change converts anew."""
    from importlib import metadata

    h = sha256(file_sha256(bundle_path).encode())
    here = Path(__file__).parent
    for name in ANCHOR_SOURCES:
        h.update((here / name).read_bytes())
    for dist in ("onnx", "onnxruntime", "torch"):
        h.update(metadata.version(dist).encode() + b"\0")
    return models_dir / "anchors" / f"{case.name}-{h.hexdigest()[:16]}"


def prepare(
    case: ModelCase, models_dir: Path, tf_python: str, litert_missing: str | None
) -> Prepared:
    """Load or train a case's bundle; export the ONNX (FP32, int8) and TFLite models, or
    take them from the cache of an earlier run (:func:`anchor_dir`)."""
    import torch

    key = (
        f"{case.data}_w{case.width or 'default'}_b{''.join(map(str, case.bits))}"
        f"_{case.fp_steps}_{case.qat_steps}.eab"
    )
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / key
    bundle = load_bundle(path) if path.exists() else train(case, path)
    ds = load_dataset(case.data)
    extra = (1,) * (len(bundle.input_shape) - 1)
    mean = bundle.norm_mean.reshape(1, -1, *extra)
    std = bundle.norm_std.reshape(mean.shape)
    test_raw = ds.X_test.astype(np.float32)
    raw = np.concatenate([test_raw] * -(-64 // len(test_raw)))[:64]
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    calib = norm(ds.X_train[:128].astype(np.float32))
    d = anchor_dir(models_dir, case, path)
    done = d / "anchors.json"
    meta: dict[str, Any] = json.loads(done.read_text()) if done.exists() else {}
    if meta.get("litert") is None and litert_missing is None:
        meta = {}  # cached without LiteRT: convert everything again, with it
    if not meta:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        net = fp_net(bundle)
        with torch.no_grad():
            fp_logits = net(torch.from_numpy(calib)).numpy()
        onnx_fp32 = anchor_onnx.export_fp32(net, calib, d / "model.onnx")
        int8 = anchor_onnx.quantize(onnx_fp32, calib, d)
        best = anchor_onnx.pick_faster(int8, norm(raw))
        meta = {
            "onnx_int8": {k: v.name for k, v in int8.items()},
            "onnx_best": best,
            "onnx_ops": anchor_onnx.op_types(int8[best], d),
            "litert": None,
        }
        if litert_missing is None:
            tfl = d / "model.tflite"
            report = anchor_litert.convert(
                bundle.arch, bundle.fp_weights, calib, fp_logits, tfl, tf_python
            )
            meta["litert"] = {
                "file": tfl.name,
                "twin_err": report["twin_max_abs_err"],
                "ops": anchor_litert.op_types(tfl),
            }
        done.write_text(json.dumps(meta))
    int8 = {k: d / v for k, v in meta["onnx_int8"].items()}
    int8["best"] = int8[meta["onnx_best"]]
    prepared = Prepared(
        case,
        path,
        bundle,
        raw,
        norm(raw),
        test_raw,
        norm(test_raw),
        macs(bundle.arch),
        d / "model.onnx",
        int8,
        meta["onnx_ops"],
        None,
        anchor_dir=d,
    )
    lit = meta["litert"]
    if lit is not None and litert_missing is None:
        prepared.tflite, prepared.twin_err = d / lit["file"], lit["twin_err"]
        prepared.tflite_ops = lit["ops"]
    return prepared
