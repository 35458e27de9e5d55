"""``edge-agent train --width N``: the default architecture at another width, run by the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle_io import load_bundle
from edge_agent.cli import main
from edge_agent.engine.engine import Engine
from edge_agent.training.arch import default_spec


def test_default_spec_width_scales_every_conv() -> None:
    narrow, wide = default_spec((6, 100), 4), default_spec((6, 100), 4, width=128)
    convs = [
        (a["out_ch"], b["out_ch"])
        for a, b in zip(narrow["layers"], wide["layers"], strict=True)
        if a["op"] == "conv1d"
    ]
    assert convs == [(32, 128), (64, 256), (64, 256)]
    assert wide["layers"][-1]["in_features"] == 256
    image = default_spec((1, 8, 8), 10, width=4)
    assert [op["out_ch"] for op in image["layers"] if op["op"] == "conv2d"] == [4, 8, 8]
    with pytest.raises(ValueError, match="width"):
        default_spec((6, 100), 4, width=0)


def test_cli_train_width_writes_a_bundle_the_engine_runs(tmp_path: Path) -> None:
    out = tmp_path / "w8.eab"
    assert (
        main(
            [
                "train",
                "--data",
                "basicmotions",
                "--bits",
                "8",
                "--width",
                "8",
                "--fp-steps",
                "4",
                "--qat-steps",
                "2",
                "--qcore-per-class",
                "0",
                "--no-flipper",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    bundle = load_bundle(out)
    assert bundle.arch["layers"][0]["out_ch"] == 8
    top, _ = Engine(bundle).predict(np.zeros((2, *bundle.input_shape), np.float32))
    assert top.shape == (2,)
