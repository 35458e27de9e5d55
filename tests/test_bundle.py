"""Bundle round trip and every corruption case, with messages naming the problem."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import (
    FORMAT_VERSION,
    MAGIC,
    from_bytes,
    load_bundle,
    save_bundle,
    to_bytes,
)
from edge_agent.container import HEADER, seal


def _rewrap(payload_obj: object) -> bytes:
    return seal(MAGIC, FORMAT_VERSION, msgpack.packb(payload_obj, use_bin_type=True))


def _payload(data: bytes) -> dict:
    return msgpack.unpackb(data[HEADER.size :], raw=False, strict_map_key=False)


def test_round_trip_is_exact(basicmotions_bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(basicmotions_bundle)
    assert sorted(b.quant) == [2, 3, 4, 8]
    assert b.input_shape == (6, 100) and b.num_classes == 4
    assert b.label_names == ["Standing", "Running", "Walking", "Badminton"]
    out = tmp_path / "copy.eab"
    save_bundle(b, out)
    again = load_bundle(out)
    assert to_bytes(again) == to_bytes(b)
    assert again.model_version == b.model_version
    for bits in b.quant:
        for la, lb in zip(b.quant[bits].layers, again.quant[bits].layers, strict=True):
            np.testing.assert_array_equal(la.packed, lb.packed)
            np.testing.assert_array_equal(la.bias_q, lb.bias_q)
    np.testing.assert_array_equal(b.norm_mean, again.norm_mean)
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_sub_byte_bundles_are_smaller(basicmotions_bundle: Path) -> None:
    b = load_bundle(basicmotions_bundle)
    w8 = b.quant[8].weight_bytes()
    assert b.quant[4].weight_bytes() <= w8 / 2
    assert b.quant[2].weight_bytes() <= w8 / 4


def test_truncated(basicmotions_bundle: Path) -> None:
    data = basicmotions_bundle.read_bytes()
    with pytest.raises(BundleError, match="truncated: payload has"):
        from_bytes(data[:-100])
    with pytest.raises(BundleError, match="shorter than the header"):
        from_bytes(data[:20])
    with pytest.raises(BundleError, match="truncated"):
        from_bytes(b"")


def test_flipped_byte_is_a_checksum_error(basicmotions_bundle: Path) -> None:
    data = bytearray(basicmotions_bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    with pytest.raises(BundleError, match="checksum mismatch"):
        from_bytes(bytes(data))


def test_wrong_magic_and_version(basicmotions_bundle: Path) -> None:
    data = basicmotions_bundle.read_bytes()
    with pytest.raises(BundleError, match="not an edge-agent bundle"):
        from_bytes(b"PK\x03\x04" + data[4:])
    wrong = data[:8] + struct.pack("<H", FORMAT_VERSION + 1) + data[10:]
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        from_bytes(wrong)


def test_trailing_garbage(basicmotions_bundle: Path) -> None:
    with pytest.raises(BundleError, match="unexpected bytes after the payload"):
        from_bytes(basicmotions_bundle.read_bytes() + b"junk")


def test_tampered_payload_with_recomputed_checksum_fails_validation(
    basicmotions_bundle: Path,
) -> None:
    data = basicmotions_bundle.read_bytes()
    p = _payload(data)
    p["label_names"] = p["label_names"][:2]
    with pytest.raises(BundleError, match="2 label names for 4 classes"):
        from_bytes(_rewrap(p))
    p = _payload(data)
    p["quant"]["4"]["layers"][1]["shift"]["data"] = np.full(
        len(p["quant"]["4"]["layers"][1]["shift"]["data"]) // 4, 99, np.int32
    ).tobytes()
    with pytest.raises(BundleError, match=r"quant\[4\].layers\[1\]: requantization shift outside"):
        from_bytes(_rewrap(p))
    p = _payload(data)
    p["quant"]["8"]["layers"][0]["codes"]["data"] = b"\x00" * 3
    with pytest.raises(BundleError, match=r"quant\[8\].layers\[0\].codes: data length"):
        from_bytes(_rewrap(p))
    p = _payload(data)
    p["norm_mean"]["dtype"] = "object"
    with pytest.raises(BundleError, match="dtype 'object' not allowed"):
        from_bytes(_rewrap(p))
    p = _payload(data)
    del p["arch"]
    with pytest.raises(BundleError, match="missing field 'arch'"):
        from_bytes(_rewrap(p))


def test_payload_not_msgpack() -> None:
    data = seal(MAGIC, FORMAT_VERSION, b"\xc1" * 10)  # 0xc1 is never used in msgpack
    with pytest.raises(BundleError, match="not valid msgpack"):
        from_bytes(data)


def test_missing_file_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read bundle"):
        load_bundle(tmp_path / "nope.eab")


def test_save_is_atomic_and_leaves_no_temp_files(basicmotions_bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(basicmotions_bundle)
    target = tmp_path / "m.eab"
    target.write_bytes(b"old")
    b.norm_std = np.zeros_like(b.norm_std)  # invalid: save must refuse before touching the file
    with pytest.raises(BundleError, match="std must be finite and non-zero"):
        save_bundle(b, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.eab"]
