"""The model bundle: one versioned, checksummed file holding everything the agent runs.

File layout (all integers little-endian)::

    magic    8 bytes  b"EDGEAGB\\x00"
    version  u16      FORMAT_VERSION
    flags    u16      0 (reserved)
    length   u64      payload length in bytes
    sha256   32 bytes digest of the payload
    payload  msgpack  a map (see ``_to_payload``); arrays as {dtype, shape, data}

No pickle anywhere: arrays are raw little-endian bytes with a whitelisted dtype. Saving
is atomic (temp file in the same directory, fsync, rename, directory fsync).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from edge_agent.bundle import (
    Bundle,
    BundleError,
    LayerQuant,
    QuantModel,
    array_from_record,
    array_record,
)
from edge_agent.container import HEADER, atomic_write_bytes, seal, unseal
from kernels.plan.packing import (
    check_bits,
    pack_flat,
    pack_rows,
    row_bytes,
    unpack_flat,
    unpack_rows,
)

MAGIC = b"EDGEAGB\x00"
FORMAT_VERSION = 1
MAX_BUNDLE_BYTES = 256 * 1024 * 1024


def _layer_to_payload(layer: LayerQuant) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bits": layer.bits,
        "k": layer.k,
        "out": layer.out_features,
        "codes": array_record(
            pack_flat(unpack_rows(layer.packed, layer.k, layer.bits), layer.bits)
        ),
        "w_scale": array_record(layer.w_scale),
        "bias_q": array_record(layer.bias_q),
        "in_scale": float(layer.in_scale),
        "in_zp": int(layer.in_zp),
    }
    if layer.out_mult is None:
        assert layer.m0 is not None and layer.shift is not None
        out.update(
            out_scale=float(layer.out_scale or 0.0),
            out_zp=int(layer.out_zp or 0),
            m0=array_record(layer.m0),
            shift=array_record(layer.shift),
        )
    else:
        out["out_mult"] = array_record(layer.out_mult)
    return out


def _layer_from_payload(obj: Any, where: str) -> LayerQuant:
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: expected a map")
    try:
        hidden = "m0" in obj
        bits, k, out = int(obj["bits"]), int(obj["k"]), int(obj["out"])
        check_bits(bits)
        codes = array_from_record(obj["codes"], f"{where}.codes")
        if codes.dtype != np.uint8 or codes.shape != (row_bytes(out * k, bits),):
            raise BundleError(
                f"{where}: {codes.shape} {codes.dtype} codes for {out}x{k} {bits}-bit weights"
            )
        layer = LayerQuant(
            bits=bits,
            k=k,
            packed=pack_rows(unpack_flat(codes, out * k, bits).reshape(out, k), bits),
            w_scale=array_from_record(obj["w_scale"], f"{where}.w_scale"),
            bias_q=array_from_record(obj["bias_q"], f"{where}.bias_q"),
            in_scale=float(obj["in_scale"]),
            in_zp=int(obj["in_zp"]),
            out_scale=float(obj["out_scale"]) if hidden else None,
            out_zp=int(obj["out_zp"]) if hidden else None,
            m0=array_from_record(obj["m0"], f"{where}.m0") if hidden else None,
            shift=array_from_record(obj["shift"], f"{where}.shift") if hidden else None,
            out_mult=None if hidden else array_from_record(obj["out_mult"], f"{where}.out_mult"),
        )
    except KeyError as exc:
        raise BundleError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: {exc}") from None
    return layer


def _to_payload(b: Bundle) -> dict[str, Any]:
    return {
        "arch": b.arch,
        "fp_weights": [[array_record(w), array_record(bias)] for w, bias in b.fp_weights],
        "label_names": list(b.label_names),
        "norm_mean": array_record(b.norm_mean.astype(np.float32)),
        "norm_std": array_record(b.norm_std.astype(np.float32)),
        "quant": {
            str(bits): {
                "weight_bits": q.weight_bits,
                "act_bits": q.act_bits,
                "input_scale": float(q.input_scale),
                "input_zp": int(q.input_zp),
                "layers": [_layer_to_payload(layer) for layer in q.layers],
            }
            for bits, q in b.quant.items()
        },
        "default_bits": b.default_bits,
        "meta": b.meta,
        "extras": {name: array_record(a) for name, a in b.extras.items()},
    }


def _from_payload(p: Any) -> Bundle:
    if not isinstance(p, dict):
        raise BundleError("payload is not a map")
    try:
        quant: dict[int, QuantModel] = {}
        for key, q in p["quant"].items():
            quant[int(key)] = QuantModel(
                weight_bits=int(q["weight_bits"]),
                act_bits=int(q["act_bits"]),
                input_scale=float(q["input_scale"]),
                input_zp=int(q["input_zp"]),
                layers=[
                    _layer_from_payload(lq, f"quant[{key}].layers[{i}]")
                    for i, lq in enumerate(q["layers"])
                ],
            )
        bundle = Bundle(
            arch=p["arch"],
            fp_weights=[
                (
                    array_from_record(w, f"fp_weights[{i}].W"),
                    array_from_record(b, f"fp_weights[{i}].b"),
                )
                for i, (w, b) in enumerate(p["fp_weights"])
            ],
            label_names=[str(n) for n in p["label_names"]],
            norm_mean=array_from_record(p["norm_mean"], "norm_mean"),
            norm_std=array_from_record(p["norm_std"], "norm_std"),
            quant=quant,
            default_bits=int(p["default_bits"]),
            meta=dict(p.get("meta", {})),
            extras={
                str(k): array_from_record(v, f"extras[{k}]") for k, v in p.get("extras", {}).items()
            },
        )
    except KeyError as exc:
        raise BundleError(f"bundle is missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"bundle has a malformed field: {exc}") from None
    validate(bundle)
    return bundle


# ---------------------------------------------------------------- validation


MAX_DIM = 1 << 20  # a size, count or kernel beyond this is damage, not a model
_CONV, _POOL = ("in_ch", "out_ch", "kernel"), ("kernel",)
_GEOMETRY = ("kernel", "stride", "padding")  # an int, or in 2-D a pair (height, width)
LAYER_KEYS = {  # the layer ops the engine runs, with the keys each needs
    "conv1d": _CONV,
    "conv2d": _CONV,
    "linear": ("in_features", "out_features"),
    **dict.fromkeys(("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"), _POOL),
    "gap": (),
    "flatten": (),
}


def _count(value: Any, where: str, lo: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_DIM:
        raise BundleError(f"{where} must be a whole number in {lo}..{MAX_DIM}, not {value!r}")


def _validate_arch(arch: Any) -> None:
    """The architecture's types and ranges, so that a damaged one is refused here with
    what is wrong, not by the engine with a KeyError or an allocation of terabytes."""
    if not isinstance(arch, dict):
        raise BundleError("arch must be a map")
    for key in ("name", "input_shape", "num_classes", "layers"):
        if key not in arch:
            raise BundleError(f"arch is missing {key!r}")
    shape, layers = arch["input_shape"], arch["layers"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
        raise BundleError(f"arch.input_shape must be (C,), (C, T) or (C, H, W), not {shape!r}")
    for i, n in enumerate(shape):
        _count(n, f"arch.input_shape[{i}]")
    _count(arch["num_classes"], "arch.num_classes")
    if not isinstance(layers, list) or not layers:
        raise BundleError("arch.layers must be a non-empty list")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or str(layer.get("op")) not in LAYER_KEYS:
            raise BundleError(f"arch.layers[{i}] must be a map with 'op' one of {list(LAYER_KEYS)}")
        missing = [key for key in LAYER_KEYS[layer["op"]] if key not in layer]
        if missing:
            raise BundleError(f"arch.layers[{i}] ({layer['op']}) is missing {missing}")
        for key, value in layer.items():
            two_d = key in _GEOMETRY and layer["op"].endswith("2d")
            pair = value if two_d and isinstance(value, list) and len(value) == 2 else [value]
            for v in pair if key not in ("op", "relu") else []:
                _count(v, f"arch.layers[{i}].{key}", lo=0 if key == "padding" else 1)


def validate(b: Bundle) -> None:
    """Check internal consistency; raise BundleError naming the first problem."""
    _validate_arch(b.arch)
    ops = b.weighted_ops()
    if not ops:
        raise BundleError("arch has no conv or linear layer")
    if len(b.fp_weights) != len(ops):
        raise BundleError(
            f"fp_weights has {len(b.fp_weights)} entries for {len(ops)} weighted layers"
        )
    channels = b.input_shape[0]
    if b.norm_mean.shape != (channels,) or b.norm_std.shape != (channels,):
        raise BundleError(f"normalization stats must have shape ({channels},)")
    if not (np.all(np.isfinite(b.norm_std)) and np.all(b.norm_std != 0)):
        # negative: a channel the statistics rung flipped (stats_signs)
        raise BundleError("normalization std must be finite and non-zero")
    if len(b.label_names) != b.num_classes:
        raise BundleError(f"{len(b.label_names)} label names for {b.num_classes} classes")
    if b.default_bits not in b.quant:
        raise BundleError(f"default_bits {b.default_bits} has no quantized model in the bundle")
    for bits, q in b.quant.items():
        where = f"quant[{bits}]"
        try:
            check_bits(q.weight_bits)
        except ValueError as exc:
            raise BundleError(f"{where}: {exc}") from None
        if q.weight_bits != bits:
            raise BundleError(f"{where}: weight_bits is {q.weight_bits}")
        if not 2 <= q.act_bits <= 8:
            raise BundleError(f"{where}: act_bits {q.act_bits} outside 2..8")
        if not (np.isfinite(q.input_scale) and q.input_scale > 0):
            raise BundleError(f"{where}: input_scale must be finite and positive")
        if len(q.layers) != len(ops):
            raise BundleError(f"{where}: {len(q.layers)} layers for {len(ops)} weighted ops")
        for i, (layer, op, (w, _)) in enumerate(zip(q.layers, ops, b.fp_weights, strict=True)):
            _validate_layer(layer, op, w, last=i == len(ops) - 1, where=f"{where}.layers[{i}]")


def _validate_layer(
    layer: LayerQuant, op: dict[str, Any], w: np.ndarray, last: bool, where: str
) -> None:
    out_ch = int(w.shape[0])
    k = int(np.prod(w.shape[1:]))
    if layer.k != k or layer.packed.shape != (out_ch, row_bytes(k, layer.bits)):
        raise BundleError(f"{where}: packed weights {layer.packed.shape} do not fit W {w.shape}")
    if layer.packed.dtype != np.uint8:
        raise BundleError(f"{where}: packed weights must be uint8")
    for name in ("w_scale", "bias_q"):
        if getattr(layer, name).shape != (out_ch,):
            raise BundleError(f"{where}: {name} must have shape ({out_ch},)")
    if not (np.all(np.isfinite(layer.w_scale)) and np.all(layer.w_scale > 0)):
        raise BundleError(f"{where}: weight scales must be finite and positive")
    if not (np.isfinite(layer.in_scale) and layer.in_scale > 0):
        raise BundleError(f"{where}: input scale must be finite and positive")
    if last != (layer.out_mult is not None):
        raise BundleError(f"{where}: only the last layer gives float logits")
    if not last:
        if layer.m0 is None or layer.shift is None or layer.m0.shape != (out_ch,):
            raise BundleError(f"{where}: requantization multipliers missing or mis-shaped")
        if np.any(layer.shift < 1) or np.any(layer.shift > 62):
            raise BundleError(f"{where}: requantization shift outside 1..62")
        if np.any(layer.m0 < 0):
            raise BundleError(f"{where}: negative requantization multiplier")
    expected = {"conv1d": 3, "conv2d": 4, "linear": 2}[op["op"]]
    if w.ndim != expected:
        raise BundleError(f"{where}: {op['op']} weight must be {expected}-D, got {w.shape}")


# ---------------------------------------------------------------- file I/O


def to_bytes(bundle: Bundle) -> bytes:
    """Serialize a bundle to the file format (header + checksummed msgpack payload)."""
    validate(bundle)
    return seal(MAGIC, FORMAT_VERSION, msgpack.packb(_to_payload(bundle), use_bin_type=True))


def from_bytes(data: bytes, source: str = "bundle") -> Bundle:
    """Parse and validate bundle bytes; raise BundleError naming the problem."""
    payload = unseal(data, MAGIC, FORMAT_VERSION, "bundle", source, BundleError)
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise BundleError(f"{source}: payload is not valid msgpack: {exc}") from None
    try:
        return _from_payload(obj)
    except BundleError as exc:
        raise BundleError(f"{source}: {exc}") from None


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle file; raise BundleError for any unreadable, corrupt or invalid file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BUNDLE_BYTES + HEADER.size:
            raise BundleError(f"{p}: {size} bytes is larger than the {MAX_BUNDLE_BYTES} limit")
        data = p.read_bytes()
    except OSError as exc:
        raise BundleError(f"{p}: cannot read bundle: {exc.strerror or exc}") from None
    return from_bytes(data, source=str(p))


def save_bundle(bundle: Bundle, path: str | os.PathLike[str]) -> None:
    """Validate and atomically write a bundle file."""
    atomic_write_bytes(path, to_bytes(bundle))
