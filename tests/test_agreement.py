"""Top-1 agreement of the integer engine with the torch fake-quant model (QuantNet).

A small model is trained per data set (short FP training and QAT, the production
architecture), exported to a bundle and run by the engine on the raw test set; the
QuantNet that QAT produced runs on the normalized test set. The two follow the same
integer grid and may differ only where a requantized value lands within float error of a
rounding tie (docs/quantization.md, "Rounding"), so at least 99% of the top-1 classes
must agree on every data set and bit-width.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.engine.engine import Engine  # noqa: E402
from edge_agent.training.arch import default_spec  # noqa: E402
from edge_agent.training.export import build_bundle  # noqa: E402
from edge_agent.training.fit import TrainConfig, fit, normalize  # noqa: E402

CASES = {"basicmotions": [8, 4, 2], "gunpoint": [4, 3], "digits": [8, 4]}
CFG = TrainConfig(fp_steps=40, qat_steps=15, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _torch_settings() -> Iterator[None]:
    """One torch thread while training here; restore the global switches training sets."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.parametrize("data", sorted(CASES))
def test_engine_agrees_with_fake_quant_model(data: str) -> None:
    ds = load_dataset(data)
    bits = CASES[data]
    spec = default_spec(ds.input_shape, ds.num_classes)
    fp, qnets, _ = fit(ds, spec, bits, seed=0, cfg=CFG)
    bundle = build_bundle(ds, spec, fp, qnets, {"seed": 0})
    mean, std = ds.normalization()
    x_norm = normalize(ds.X_test, mean, std)
    x_raw = ds.X_test.astype(np.float32)
    engine = Engine(bundle)
    for b in bits:
        engine.set_bits(b)
        with torch.no_grad():
            want = qnets[b].eval()(x_norm).argmax(1).numpy()
        got, _ = engine.predict(x_raw)
        agreement = float((got == want).mean())
        assert agreement >= 0.99, f"{data} {b}-bit: top-1 agreement {agreement:.4f}"
