"""Bit packing of signed low-bit weight codes, row by row (see docs/quantization.md)."""

from __future__ import annotations

import numpy as np

from kernels.plan.bitwidths import SUPPORTED_BITS


def check_bits(bits: int) -> None:
    """Raise ValueError unless ``bits`` is a supported weight width."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"unsupported weight bit-width {bits}; supported: {SUPPORTED_BITS}")


def qrange(bits: int) -> tuple[int, int]:
    """Signed integer range ``(qmin, qmax)`` of a ``bits``-wide weight."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def row_bytes(k: int, bits: int) -> int:
    """Bytes that one packed row of ``k`` codes takes."""
    return (k * bits + 7) // 8


def pack_rows(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed integer weights ``q`` of shape (O, K) into (O, row_bytes) uint8.

    Code ``u = q + 2^(bits-1)`` of element i sits at bits i*b .. i*b+b-1 of the row's
    little-endian bit stream.
    """
    check_bits(bits)
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"pack_rows expects a 2-D (out, k) array, got shape {q.shape}")
    qmin, qmax = qrange(bits)
    if q.size and (q.min() < qmin or q.max() > qmax):
        raise ValueError(f"weights outside the {bits}-bit range [{qmin}, {qmax}]")
    codes = (q.astype(np.int16) - qmin).astype(np.uint8)
    o, k = codes.shape
    if bits == 8:
        return codes.copy()
    # bit planes: (O, K, bits) little-endian bits of each code, then flatten per row
    bitplanes = (codes[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1
    stream = bitplanes.reshape(o, k * bits)
    pad = row_bytes(k, bits) * 8 - k * bits
    if pad:
        stream = np.concatenate([stream, np.zeros((o, pad), np.uint8)], axis=1)
    return np.packbits(stream, axis=1, bitorder="little")


def unpack_rows(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`: (O, row_bytes) uint8 -> (O, k) int8 weights."""
    check_bits(bits)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != row_bytes(k, bits):
        raise ValueError(
            f"packed weights have shape {packed.shape}, expected (out, {row_bytes(k, bits)})"
        )
    qmin, _ = qrange(bits)
    if bits == 8:
        codes = packed
    else:
        o = packed.shape[0]
        stream = np.unpackbits(packed, axis=1, bitorder="little")[:, : k * bits]
        weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
        codes = (stream.reshape(o, k, bits).astype(np.uint16) * weights).sum(axis=2)
    return (codes.astype(np.int16) + qmin).astype(np.int8)


def pack_flat(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack a whole weight tensor as one bit stream (the compact form stored in bundles)."""
    return pack_rows(np.asarray(q).reshape(1, -1), bits)[0]


def unpack_flat(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_flat`: ``n`` int8 weights."""
    return unpack_rows(np.asarray(packed, dtype=np.uint8).reshape(1, -1), n, bits)[0]
