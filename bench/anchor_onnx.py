"""onnxruntime anchors: the bundle's FP network exported to ONNX, FP32 and int8.

The int8 model is made the way onnxruntime's documentation recommends: the export keeps
global average pooling as one ``GlobalAveragePool`` node (``x.flatten(2).mean(2)``, the
training code's form, exports as Shape/Reshape/ReduceMean, which stays in float and
forces a dequantize/requantize around it), ``quant_pre_process`` (shape inference and
graph optimization) runs first, and both static formats, QDQ and QOperator (uint8
activations, int8 per-channel weights), are built; :func:`pick_faster` keeps whichever
runs faster here. :func:`op_types` lists the nodes of the optimized graph that
onnxruntime actually runs, to check that it is all int8.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def export_fp32(net: Any, example: np.ndarray, path: Path) -> Path:
    """Export a folded FP network with its global average pooling as GlobalAveragePool."""
    import torch
    from torch import nn

    from edge_agent.training.arch import GlobalAvgPool

    class GAP(nn.Module):
        def __init__(self, dims: int) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(self.pool(x), 1)

    dims = example.ndim - 2
    for i, block in enumerate(net.blocks):
        if isinstance(block, GlobalAvgPool):
            net.blocks[i] = GAP(dims)
    torch.onnx.export(
        net,
        (torch.from_numpy(example[:1]),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def quantize(fp32: Path, calib: np.ndarray, out_dir: Path) -> dict[str, Path]:
    """Static int8 models (QDQ and QOperator) of an FP32 ONNX file, after quant_pre_process."""
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_dir / "model.pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    models = {}
    for name, fmt in (("qdq", QuantFormat.QDQ), ("qoperator", QuantFormat.QOperator)):
        path = out_dir / f"model.int8.{name}.onnx"
        quantize_static(
            str(pre),
            str(path),
            _reader(calib),
            quant_format=fmt,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        models[name] = path
    return models


def _reader(calib: np.ndarray) -> Any:
    """A calibration data reader over ``calib``, one sample at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    return Reader()


def session(path: Path, optimized: Path | None = None) -> Any:
    """A one-thread CPU session (optionally saving the graph onnxruntime runs)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # not the NchwcTransformer warning of every save
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Forward function of a model file: float (N, ...) -> logits."""
    sess = session(path)
    return lambda x: sess.run(None, {"x": x})[0]


def op_types(path: Path, tmp: Path) -> dict[str, int]:
    """Node types of the graph onnxruntime runs for ``path`` (after its optimizations)."""
    import onnx

    optimized = tmp / (path.stem + ".optimized.onnx")
    session(path, optimized)
    graph = onnx.load(str(optimized)).graph
    return dict(Counter(node.op_type for node in graph.node))


def pick_faster(models: dict[str, Path], x: np.ndarray, seconds: float = 0.5) -> str:
    """Name of the model that runs ``x`` in less thread CPU time (interleaved, best of 3)."""
    runs = {name: runner(path) for name, path in models.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(3):
        for name, fn in runs.items():
            fn(x)
            n, t0 = 0, time.thread_time_ns()
            while (t := time.thread_time_ns() - t0) < seconds / 3 * 1e9:
                fn(x)
                n += 1
            best[name] = min(best[name], t / n)
    return min(best, key=lambda k: best[k])


def int8_float_ops(types: dict[str, int]) -> list[str]:
    """Op types in an int8 graph that compute in float (besides the edge (De)QuantizeLinear)."""
    ok = {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MaxPool",
        "NhwcMaxPool",
        "Flatten",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Identity",
    }
    return sorted(t for t in types if t not in ok and not t.startswith(("QLinear", "QGemm")))


def float_gap_int8(net: Any, calib: np.ndarray, out_dir: Path) -> Path:
    """The int8 model this bench used to build: the training code's GAP (flatten + mean,
    which stays in float), no quant_pre_process, QOperator. For comparison only."""
    import torch
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / "floatgap.onnx", out_dir / "floatgap.int8.onnx"
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

    quantize_static(
        str(fp32),
        str(int8),
        _reader(calib),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return int8
