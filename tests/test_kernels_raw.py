"""The model descriptor and the unmanaged arrays the interpreter builds from it."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from kernels.codegen.raw import array_at, f32_from_bits, matrix_at, unmanaged
from kernels.plan import abi


def _params() -> tuple[object, ...]:
    rng = np.random.default_rng(0)
    tab = rng.integers(-50, 50, size=(3, 7)).astype(np.int64)
    vec = {np.uint8: rng.integers(0, 255, 33), np.int32: rng.integers(-9, 9, 5)}
    f32 = rng.normal(size=4).astype(np.float32)
    return (
        tab,
        tab[:2].copy(),
        tab.T.copy(),
        vec[np.uint8].astype(np.uint8),
        *(vec[np.int32].astype(np.int32) for _ in range(3)),
        f32,
        f32 + 1,
        f32 + 2,
        np.float32(0.0123),
        -7,
        255,
        np.arange(9, dtype=np.int64),
    )


def test_descriptor_words_are_addresses_shapes_and_values() -> None:
    params = _params()
    d = abi.descriptor(params)
    assert d.dtype == np.int64 and d.shape == (abi.WORDS * len(abi.MODEL_ARGS),)
    ops, panel = params[0], params[3]
    assert isinstance(ops, np.ndarray) and isinstance(panel, np.ndarray)
    at = abi.slot("ops")
    assert list(d[at : at + 3]) == [ops.ctypes.data, 3, 7]
    at = abi.slot("panel")
    assert list(d[at : at + 3]) == [panel.ctypes.data, 33, 0]
    assert d[abi.slot("in_zp")] == -7 and d[abi.slot("hi")] == 255
    assert np.int32(d[abi.slot("in_scale")]).view(np.float32) == np.float32(0.0123)
    with pytest.raises(TypeError, match="ltab"):
        abi.descriptor((*params[:2], params[2].astype(np.int32), *params[3:]))  # type: ignore[union-attr]


_LTAB, _PANEL, _STD = abi.slot("ltab"), abi.slot("panel"), abi.slot("std")
_SCALE, _HI = abi.slot("in_scale"), abi.slot("hi")


@numba.njit
def _read_back(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32, int]:
    ltab = matrix_at(d[_LTAB], d[_LTAB + 1], d[_LTAB + 2], np.int64)
    panel = array_at(d[_PANEL], d[_PANEL + 1], np.uint8)
    std = array_at(d[_STD], d[_STD + 1], np.float32)
    return ltab.copy(), panel.copy(), std.copy(), f32_from_bits(d[_SCALE]), d[_HI]


def test_kernels_read_the_model_through_its_descriptor() -> None:
    params = _params()
    ltab, panel, std, scale, hi = _read_back(abi.descriptor(params))
    np.testing.assert_array_equal(ltab, params[2])  # type: ignore[arg-type]
    np.testing.assert_array_equal(panel, params[3])  # type: ignore[arg-type]
    np.testing.assert_array_equal(std, params[9])  # type: ignore[arg-type]
    assert scale == params[10] and hi == 255


@numba.njit(no_cpython_wrapper=True)
def _head(v: np.ndarray) -> int:
    return v[-1] // v[0]  # may raise: the caller's reference counts survive the optimizer


@numba.njit
def _sum_of_views(a: np.ndarray) -> int:
    b = unmanaged(a)
    total = 0
    for i in range(b.shape[0]):
        if b[i] > 2:  # a view per element passed on: without unmanaged, an atomic pair each
            total += _head(b[i:])
    return total


def test_views_of_unmanaged_arrays_count_no_references() -> None:
    a = np.arange(10, dtype=np.int64)
    assert _sum_of_views(a) == sum(9 // v for v in range(3, 10))
    llvm = next(iter(_sum_of_views.inspect_llvm().values()))
    # the function itself, not its Python wrappers or the NRT helpers
    functions = {re.findall(r"@([\w.]+)\(", f)[0]: f for f in llvm.split("\ndefine ")[1:]}
    body = next(
        f for name, f in functions.items() if "_sum_of_views" in name and "cpython" not in name
    )
    calls = re.findall(r"call void @NRT_(?:incref|decref)\((?:ptr|i8\*) (\S+)\)", body)
    assert set(calls) <= {"null"}
