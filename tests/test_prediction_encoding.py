"""Predictions encoded with a reused packer (the agent's publish path: one per batch) are
byte-identical to those encoded alone, message after message."""

from __future__ import annotations

import msgpack

from edge_agent.ingest.protocol import encode_prediction


def test_a_reused_packer_encodes_each_prediction_as_a_fresh_one_does() -> None:
    pack = msgpack.Packer(use_bin_type=True).pack
    cases = [
        ("s1", 0, 1.5, 2, "Walking", 0.75, "c062ee9ed35b", 0.25, None),
        ("sensor-ü", 2**64 - 1, 1.7e9, 0, "Standing", 1.0, "abc", 12.5, 3),
        ("s1", 1, 0, 1, "Running", 0.5, "", 0.0, 0),
    ]
    for args in cases:
        raw = encode_prediction(*args, pack=pack)
        assert raw == encode_prediction(*args)
        msg = msgpack.unpackb(raw)
        assert (msg["sensor"], msg["seq"], msg["class"], msg["label"]) == (
            args[0],
            args[1],
            args[3],
            args[8],
        )
