"""Ahead-of-time compiled kernels: bit-exact with the JIT and the reference, loaded
without numba, small, and skipped (JIT instead) when stale or corrupt."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_engine import ARCHS, BITS, _inputs, assert_trace_equals_reference, random_bundle

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.data import load_dataset
from edge_agent.engine import reference
from edge_agent.engine.engine import Engine
from kernels.build import cachepaths
from kernels.exec import backend
from kernels.plan import abi

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "edge_agent" / "defaults" / "basicmotions.eab"


def _reference(bundle: Bundle, bits: int, x: np.ndarray) -> np.ndarray:
    return reference.forward(
        bundle.arch["layers"], bundle.quant[bits], bundle.norm_mean, bundle.norm_std, x
    )


def test_aot_equals_jit_and_reference_on_a_trained_model(
    basicmotions_bundle: Path, aot_kernels: backend.Kernels
) -> None:
    bundle = load_bundle(basicmotions_bundle)
    aot = Engine(bundle, kernels=aot_kernels)
    jit = Engine(bundle, kernels=backend.load("jit"))
    assert (aot.backend, jit.backend) == ("aot", "jit") and aot.isa == jit.isa
    x_test = load_dataset("basicmotions").X_test.astype(np.float32)
    for bits in bundle.quant:
        aot.set_bits(bits)
        jit.set_bits(bits)
        for x in (x_test[:1], x_test):
            got = aot.predict_logits(x)
            np.testing.assert_array_equal(got, jit.predict_logits(x), err_msg=f"{bits} bits")
            np.testing.assert_array_equal(got, _reference(bundle, bits, x), err_msg=f"{bits}")


@pytest.fixture(scope="module")
def aot_engines(aot_kernels: backend.Kernels) -> dict[str, tuple[Bundle, Engine]]:
    out = {}
    for name, spec in ARCHS.items():
        bundle = random_bundle(spec, act_bits=6 if name == "convhead" else 8)
        out[name] = (bundle, Engine(bundle, kernels=aot_kernels))
    return out


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("arch", sorted(ARCHS))  # conv1d, conv2d (image), pools, gap
@pytest.mark.parametrize("batch", [1, 5, 37])
def test_aot_equals_reference_on_every_layer_kind(
    aot_engines: dict[str, tuple[Bundle, Engine]], arch: str, bits: int, batch: int
) -> None:
    bundle, engine = aot_engines[arch]
    engine.set_bits(bits)
    x = _inputs(ARCHS[arch], batch, seed=bits * 10 + batch)
    np.testing.assert_array_equal(engine.predict_logits(x), _reference(bundle, bits, x))
    assert_trace_equals_reference(bundle, engine, x)


def test_engine_states_have_the_compiled_argument_types(aot_kernels: backend.Kernels) -> None:
    engine = Engine(random_bundle(ARCHS["image"], bits=(4,)), kernels=aot_kernels)
    st = engine._state
    x = engine._as_batch(_inputs(ARCHS["image"], 2))
    out = np.empty((2, engine.num_classes), np.float32)
    no_trace = (np.empty(0, np.uint8), np.empty(0, np.int64))
    work = engine._workspaces[0] if engine._workspaces else np.empty(0, np.uint8)
    abi.check((x, *st.args, out, *no_trace, work), abi.RUN_PROGRAM)  # what _run passes
    p = st.params
    for i, bad in ((3, p[3].astype(np.int64)), (0, np.asfortranarray(p[0])), (11, 1.5)):
        args = list(p)
        args[i] = bad
        with pytest.raises(TypeError, match=abi.MODEL_ARGS[i].name):
            abi.descriptor(args)


_ENGINE_ONLY = """
import json, sys
import numpy as np
from edge_agent.engine.engine import Engine
e = Engine.from_path(sys.argv[1])
x = np.random.default_rng(0).normal(size=(64, *e.input_shape)).astype(np.float32)
for b in e.available_bits:
    e.set_bits(b)
    for _ in range(5):
        e.predict(x)
        e.predict(x[:1])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"backend": e.backend, "peak_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "modules": sorted({m.split(".")[0] for m in sys.modules}
                                    & {"numba", "llvmlite", "torch"})}))
"""


def test_engine_only_process_with_aot_kernels_is_small_and_numba_free(aot_cache: Path) -> None:
    env = {**os.environ, "EDGE_AGENT_JIT_CACHE": str(aot_cache), "EDGE_AGENT_KERNELS": "aot"}
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE_ONLY, str(DEFAULT_BUNDLE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "aot" and result["modules"] == [], result
    assert result["peak_mb"] < 100, result  # the target is 120 MB; the JIT engine needs ~145


def test_stale_or_corrupt_modules_are_skipped_for_the_jit(
    aot_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the module, not its manifest (same prefix; which one a bare glob lists first varies)
    built = next((aot_cache / "aot").glob(f"{cachepaths.AOT_PREFIX}*{cachepaths.EXTENSION_SUFFIX}"))
    good = tmp_path / "good"
    shutil.copytree(aot_cache / "aot", good)
    assert backend.load("auto", aot_dir=good).backend == "aot"

    stale = tmp_path / "stale"  # as left by other kernel sources: another key in the name
    stale.mkdir()
    other = f"{cachepaths.AOT_PREFIX}generic_{'0' * 16}{cachepaths.EXTENSION_SUFFIX}"
    shutil.copy(built, stale / other)
    with caplog.at_level(logging.INFO, logger="kernels.exec.backend"):
        assert backend.load("auto", aot_dir=stale).backend == "jit"
    assert "stale AOT kernel module" in caplog.text and other in caplog.text

    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    data = built.read_bytes()
    (corrupt / built.name).write_bytes(data[: len(data) // 2])  # dlopen would accept it
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kernels.exec.backend"):
        assert backend.load("auto", aot_dir=corrupt).backend == "jit"
    assert "ignoring AOT kernel module" in caplog.text and "SHA-256" in caplog.text
    with pytest.raises(backend.KernelsUnavailable, match="compile-kernels"):
        backend.load("aot", aot_dir=corrupt)
    with pytest.raises(ValueError, match="EDGE_AGENT_KERNELS"):
        backend.load("fast", aot_dir=good)


def test_compile_kernels_without_a_compiler_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_AGENT_JIT_CACHE": str(tmp_path), "CC": "/nonexistent/cc"}
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "compile-kernels"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "AOT build unavailable (no C compiler" in done.stderr, done.stderr
    assert "JIT-compile" in done.stderr
    assert not list(tmp_path.glob("aot/" + cachepaths.AOT_PREFIX + "*"))
