"""Central functions pinned by values computed by hand (not by the helpers the code uses)."""

from __future__ import annotations

import msgpack
import numpy as np

from edge_agent.calibrate.qcore import RIGHT, UNKNOWN, BufferConfig, QCoreBuffer
from edge_agent.ingest.protocol import ProtocolError, decode_ingest
from kernels.plan.fixedpoint import quantize_multiplier


def test_quantize_multiplier_rounds_the_mantissa() -> None:
    # 0.7 = 0.7 * 2^0; 0.7 * 2^31 = 1503238553.6 -> 1503238554 (truncation: ...553)
    assert quantize_multiplier(0.7) == (1503238554, 31)
    # 0.3 = 0.6 * 2^-1; 0.6 * 2^31 = 1288490188.8 -> 1288490189, shift 31 + 1
    assert quantize_multiplier(0.3) == (1288490189, 32)
    # 0.1 = 0.8 * 2^-3; 0.8 * 2^31 = 1717986918.4 -> 1717986918 (rounds down)
    assert quantize_multiplier(0.1) == (1717986918, 34)
    # 1 - 2^-40: the mantissa rounds up to 2^31, which carries into the exponent
    assert quantize_multiplier(1 - 2**-40) == (1 << 30, 30)


def _by_first(x: np.ndarray) -> np.ndarray:
    """Class = the first element of the sample, as an int."""
    return x[:, 0, 0].astype(np.int64)


def test_qcore_unknown_then_wrong_is_not_a_miss() -> None:
    buf = QCoreBuffer((1, 2), (8,), BufferConfig(max_samples=16, class_balance=False))
    x = np.array([[[0.0, 0.0]], [[1.0, 0.0]]], dtype=np.float32)
    buf.update(x, np.array([0, 1]), None, {8: _by_first}, None, seqs=np.array([10, 11]))
    assert buf.misses.tolist() == [0.0, 0.0]
    assert buf.last_correct.ravel().tolist() == [RIGHT, RIGHT]
    assert buf.set_label(10, 1)  # sample 10's correctness is now unknown
    assert buf.last_correct[buf.seq == 10].ravel().tolist() == [UNKNOWN]
    # next update: the model says 0 for sample 10 (now labelled 1) -> wrong, but unknown
    # before: no miss; sample 11 goes right -> wrong: one miss
    wrong_on_11 = lambda a: np.where(a[:, 0, 0] == 1.0, 2, _by_first(a))  # noqa: E731
    x2 = np.array([[[2.0, 0.0]]], dtype=np.float32)
    res = buf.update(x2, np.array([2]), None, {8: wrong_on_11}, None, seqs=np.array([12]))
    misses = {int(s): float(m) for s, m in zip(buf.seq, buf.misses, strict=True)}
    assert misses == {10: 0.0, 11: 1.0, 12: 0.0}
    assert res.events == 1


def _sample(sensor: str) -> bytes:
    x = np.zeros((2, 3), dtype="<f4")
    return msgpack.packb(
        {
            "v": 1,
            "type": "sample",
            "sensor": sensor,
            "seq": 1,
            "ts": 0.0,
            "dtype": "float32",
            "shape": [2, 3],
            "data": x.tobytes(),
        }
    )


def test_sensor_of_64_characters_is_accepted_65_is_not() -> None:
    for sensor in ("x" * 64, "é" * 64):  # 64 characters; the second is 128 bytes of UTF-8
        assert decode_ingest(_sample(sensor), (2, 3), 2).sensor == sensor
    for sensor in ("x" * 65, ""):
        try:
            decode_ingest(_sample(sensor), (2, 3), 2)
        except ProtocolError as exc:
            assert exc.reason == "field"
        else:
            raise AssertionError(f"sensor of {len(sensor)} characters accepted")
