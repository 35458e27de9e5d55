"""Build a Keras twin of a bundle's architecture and convert it to a full-integer TFLite model.

Run by :mod:`bench.anchor_litert` in a Python that has TensorFlow (CPU), as a separate
process (TensorFlow and torch are never loaded together):

    python bench/tflite_convert.py IN.npz OUT.tflite

``IN.npz`` holds ``spec`` (the bundle's architecture as JSON), the folded FP weights
``w0, b0, w1, b1, ...`` in torch layout and ``calib`` (normalized training samples,
channels first). The twin is channels-last (NWC / NHWC, TFLite's native layout); the
converter quantizes it with the representative data set: int8 weights per channel, int8
activations, every op in int8 (TFLITE_BUILTINS_INT8), float input and output.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def keras_twin(spec: dict, weights: list[tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    """The Keras model of ``spec`` (channels last) with ``weights`` (torch layout) loaded."""
    import tensorflow as tf

    shape = spec["input_shape"]
    # a 1-D net becomes a 2-D one of height 1: TFLite has no 1-D conv or pooling op (the
    # converter would wrap each in EXPAND_DIMS / RESHAPE), so this is its best form
    hw = (1, shape[1]) if len(shape) == 2 else tuple(shape[1:])
    inputs = tf.keras.Input(shape=(*hw, shape[0]), name="x")
    x = inputs
    layers = []
    for op in spec["layers"]:
        kind = op["op"]
        act = "relu" if op.get("relu") else None
        if kind in ("conv1d", "conv2d"):
            if kind == "conv1d":
                k, s, p = (1, op["kernel"]), (1, op.get("stride") or 1), (0, op["padding"])
            else:
                k, s, p = tuple(op["kernel"]), tuple(op["stride"]), tuple(op["padding"])
            same = all(pi == ki // 2 and ki % 2 == 1 for pi, ki in zip(p, k, strict=True))
            if not same and any(p):
                x = tf.keras.layers.ZeroPadding2D(p)(x)
            layer = tf.keras.layers.Conv2D(
                op["out_ch"], k, s, padding="same" if same else "valid", activation=act
            )
        elif kind == "linear":
            layer = tf.keras.layers.Dense(op["out_features"], activation=act)
        elif kind in ("maxpool1d", "maxpool2d"):
            if kind == "maxpool1d":
                k, s = (1, op["kernel"]), (1, op.get("stride") or op["kernel"])
            else:
                k, s = tuple(op["kernel"]), tuple(op["stride"])
            x = tf.keras.layers.MaxPooling2D(k, s)(x)
            continue
        elif kind == "gap":
            x = tf.keras.layers.GlobalAveragePooling2D()(x)
            continue
        else:
            raise ValueError(f"no Keras twin for op {kind}")
        x = layer(x)
        layers.append(layer)
    model = tf.keras.Model(inputs, x)
    for layer, (w, b) in zip(layers, weights, strict=True):
        if w.ndim == 3:  # conv1d (O, I, K) -> (1, K, I, O)
            w = w.transpose(2, 1, 0)[None]
        elif w.ndim == 4:  # conv2d (O, I, KH, KW) -> (KH, KW, I, O)
            w = w.transpose(2, 3, 1, 0)
        else:  # linear (O, I) -> (I, O)
            w = w.T
        layer.set_weights([w, b])
    return model


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, T) -> (N, 1, T, C), (N, C, H, W) -> (N, H, W, C): the twin's input layout."""
    x = x[:, :, None] if x.ndim == 3 else x
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def main(argv: list[str]) -> int:
    """Convert; print the FP twin's agreement with the stored FP logits as a check."""
    import tensorflow as tf

    data = np.load(argv[0])
    spec = json.loads(str(data["spec"]))
    n = sum(op["op"] in ("conv1d", "conv2d", "linear") for op in spec["layers"])
    weights = [(data[f"w{i}"], data[f"b{i}"]) for i in range(n)]
    model = keras_twin(spec, weights)
    calib = channels_last(data["calib"].astype(np.float32))
    check = model(calib[:8]).numpy()
    err = float(np.abs(check - data["fp_logits"][:8]).max())

    def representative():  # type: ignore[no-untyped-def]
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with open(argv[1], "wb") as f:
        f.write(converter.convert())
    print(json.dumps({"twin_max_abs_err": err}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
