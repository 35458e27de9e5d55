"""The arm64 golden comparison (tests/arm64/golden.py) catches the smallest difference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

GOLDEN_PY = Path(__file__).resolve().parent / "arm64" / "golden.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arm64_golden", GOLDEN_PY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


golden = _load()


@pytest.fixture(scope="module")
def real() -> dict[str, np.ndarray]:
    """Results of the bundled model on the golden inputs, on this machine."""
    return golden.results(golden.golden_inputs(), golden.bundle_path())


def _copy(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in res.items()}


def test_identical_results_pass(real: dict[str, np.ndarray]) -> None:
    assert any(k.startswith("engine_logits_") for k in real)
    assert any(k.startswith("codes_") for k in real)
    assert golden.compare(real, _copy(real)) == []


def test_one_ulp_in_one_logit_fails(real: dict[str, np.ndarray]) -> None:
    key = sorted(k for k in real if k.startswith("engine_logits_"))[0]
    changed = _copy(real)
    v = changed[key][3, 1]
    changed[key][3, 1] = np.nextafter(v, np.float32(np.inf), dtype=np.float32)
    problems = golden.compare(real, changed)
    assert any(p.startswith(f"{key}: 1 element(s) differ, first at (3, 1)") for p in problems)
    # the same change also breaks engine-vs-reference agreement on "this machine"
    assert any("engine and reference disagree" in p for p in problems)


def test_negative_zero_is_a_difference() -> None:
    a = {
        "engine_logits_8": np.zeros((2, 3), np.float32),
        "reference_logits_8": np.zeros((2, 3), np.float32),
    }
    b = _copy(a)
    b["engine_logits_8"][1, 2] = np.float32(-0.0)
    b["reference_logits_8"][1, 2] = np.float32(-0.0)
    assert golden.compare(a, b) != []


def test_one_code_off_by_one_fails(real: dict[str, np.ndarray]) -> None:
    key = sorted(k for k in real if k.startswith("codes_"))[0]
    changed = _copy(real)
    changed[key][0, 0] += 1 if changed[key][0, 0] < 0 else -1
    assert [p.split(":")[0] for p in golden.compare(real, changed)] == [key]


def test_one_class_off_fails(real: dict[str, np.ndarray]) -> None:
    key = sorted(k for k in real if k.startswith("engine_classes_"))[0]
    changed = _copy(real)
    changed[key][5] = (changed[key][5] + 1) % 4
    assert [p.split(":")[0] for p in golden.compare(real, changed)] == [key]


def test_missing_or_reshaped_results_fail(real: dict[str, np.ndarray]) -> None:
    key = sorted(real)[0]
    missing = _copy(real)
    del missing[key]
    assert any(p == f"{key}: missing here" for p in golden.compare(real, missing))
    reshaped = _copy(real)
    reshaped[key] = reshaped[key][:-1]
    assert any(p.startswith(f"{key}: ") for p in golden.compare(real, reshaped))
    retyped = _copy(real)
    retyped[key] = retyped[key].astype(np.float64)
    assert any(p.startswith(f"{key}: float64") for p in golden.compare(real, retyped))


def test_check_command_fails_on_a_tampered_golden_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "golden.npz"
    assert golden.main(["compute", str(good)]) == 0
    assert golden.main(["check", str(good)]) == 0
    with np.load(good, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    key = sorted(k for k in data if k.startswith("reference_logits_"))[-1]
    flat = data[key].reshape(-1)
    flat[7] = np.nextafter(flat[7], np.float32(-np.inf), dtype=np.float32)
    bad = tmp_path / "tampered.npz"
    np.savez_compressed(bad, **data)
    capsys.readouterr()
    assert golden.main(["check", str(bad)]) == 1
    assert f"{key}: 1 element(s) differ" in capsys.readouterr().err
    assert golden.main(["check", str(good), "--expect-isa", "no-such-isa"]) == 1
