"""Kernel layout of packed weights ("panels"), built once at load time.

A weight matrix ``q`` (O, K) is cut into blocks of 16 output channels. Within a block,
a *tile* covers 4 consecutive inputs: 64 codes ``u = q + 2^(b-1)``, byte ``4*o + j`` for
output ``o`` (0..15) and input ``4*i + j``; this is the operand layout of a 4-way
dot-product instruction (x86 ``vpdpbusd``). Tiles are grouped into *chunks* that hold
them bit-packed:

- 8 bits: 1 tile per 64-byte chunk (the codes themselves);
- 4 bits: 2 tiles per 64 bytes (tile 0 in the low nibbles, tile 1 in the high nibbles);
- 2 bits: 4 tiles per 64 bytes (tile g in bits 2g, 2g+1);
- 3 bits: 8 tiles per 192 bytes: bytes 0..63 hold the low two bits of tiles 0..3 as in
  the 2-bit layout, bytes 64..127 those of tiles 4..7, bytes 128..191 the high bit of
  tile g in bit g.

So a panel takes exactly ``b`` bits per (padded) weight. Padding inputs and outputs hold
the code of ``q = 0``. The panel of a layer is the concatenation of its output blocks.
"""

from __future__ import annotations

import numpy as np

from kernels.plan.packing import check_bits, qrange

TILE_CODES = 64
OUT_BLOCK = 16
#: bits -> (tiles per chunk, bytes per chunk)
CHUNK = {8: (1, 64), 4: (2, 64), 2: (4, 64), 3: (8, 192)}


def panel_dims(out_ch: int, k: int, bits: int) -> tuple[int, int]:
    """``(output blocks, chunks per block)`` of a panel for an (out_ch, k) matrix."""
    check_bits(bits)
    tiles_per_chunk, _ = CHUNK[bits]
    k4 = -(-k // 4)
    return -(-out_ch // OUT_BLOCK), -(-k4 // tiles_per_chunk)


def padded_k(k: int, bits: int) -> int:
    """Inputs a panel row covers (``k`` rounded up to whole chunks)."""
    _, nchunks = panel_dims(1, k, bits)
    return nchunks * CHUNK[bits][0] * 4


def panel_nbytes(out_ch: int, k: int, bits: int) -> int:
    """Bytes of the panel of an (out_ch, k) matrix."""
    blocks, nchunks = panel_dims(out_ch, k, bits)
    return blocks * nchunks * CHUNK[bits][1]


def _tiles(q: np.ndarray, bits: int) -> np.ndarray:
    """Codes of ``q`` as (blocks, chunks, tiles per chunk, 64) uint8 tiles."""
    out_ch, k = q.shape
    blocks, nchunks = panel_dims(out_ch, k, bits)
    tiles_per_chunk, _ = CHUNK[bits]
    offset = -qrange(bits)[0]
    u = np.full((blocks * OUT_BLOCK, nchunks * tiles_per_chunk * 4), offset, dtype=np.uint8)
    u[:out_ch, :k] = (q.astype(np.int16) + offset).astype(np.uint8)
    t = u.reshape(blocks, OUT_BLOCK, nchunks, tiles_per_chunk, 4)
    return t.transpose(0, 2, 3, 1, 4).reshape(blocks, nchunks, tiles_per_chunk, TILE_CODES)


def _planes(tiles: np.ndarray, width: int) -> np.ndarray:
    """OR the tiles of the last-but-one axis into one byte plane, tile g at bit g*width."""
    out = np.zeros(tiles.shape[:-2] + tiles.shape[-1:], dtype=np.uint8)
    mask = (1 << width) - 1
    for g in range(tiles.shape[-2]):
        out |= (tiles[..., g, :] & mask) << (g * width)
    return out


def to_panel(q: np.ndarray, bits: int) -> np.ndarray:
    """Signed weights ``q`` (O, K) in ``[-2^(b-1), 2^(b-1))`` -> flat uint8 panel."""
    check_bits(bits)
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"to_panel expects a 2-D (out, k) array, got shape {q.shape}")
    qmin, qmax = qrange(bits)
    if q.size and (q.min() < qmin or q.max() > qmax):
        raise ValueError(f"weights outside the {bits}-bit range [{qmin}, {qmax}]")
    t = _tiles(q, bits)
    if bits == 8:
        chunks = t[:, :, 0, :]
    elif bits in (4, 2):
        chunks = _planes(t, bits)
    else:  # 3 bits: two 2-bit planes of four tiles each, then one plane of high bits
        high = _planes(t >> 2, 1)
        chunks = np.concatenate([_planes(t[:, :, :4], 2), _planes(t[:, :, 4:], 2), high], axis=2)
    return np.ascontiguousarray(chunks).reshape(-1)


def from_panel(panel: np.ndarray, out_ch: int, k: int, bits: int) -> np.ndarray:
    """Inverse of :func:`to_panel`: flat panel -> (out_ch, k) int8 weights."""
    check_bits(bits)
    blocks, nchunks = panel_dims(out_ch, k, bits)
    tiles_per_chunk, chunk_bytes = CHUNK[bits]
    c = np.asarray(panel, dtype=np.uint8).reshape(blocks, nchunks, chunk_bytes)
    t: np.ndarray
    if bits == 8:
        t = c[:, :, None, :]
    elif bits in (4, 2):
        shifts = (np.arange(tiles_per_chunk) * bits).astype(np.uint8)
        t = (c[:, :, None, :] >> shifts[:, None]) & ((1 << bits) - 1)
    else:
        g = np.arange(8, dtype=np.uint8)
        low = np.concatenate([c[:, :, None, 0:64], c[:, :, None, 64:128]], axis=2)
        low = (np.repeat(low, 4, axis=2) >> (2 * (g % 4))[:, None]) & 3
        high = (c[:, :, None, 128:192] >> g[:, None]) & 1
        t = low | (high << 2)
    u = t.reshape(blocks, nchunks, tiles_per_chunk, OUT_BLOCK, 4).transpose(0, 3, 1, 2, 4)
    u = u.reshape(blocks * OUT_BLOCK, nchunks * tiles_per_chunk * 4)[:out_ch, :k]
    return (u.astype(np.int16) + qrange(bits)[0]).astype(np.int8)


def conv_to_kernel_order(q: np.ndarray, in_ch: int, spatial: tuple[int, ...]) -> np.ndarray:
    """Reorder conv weight columns from torch ``[c, *kernel]`` to channels-last ``[*kernel, c]``."""
    out_ch = q.shape[0]
    w = q.reshape(out_ch, in_ch, *spatial)
    perm = (0, *range(2, 2 + len(spatial)), 1)
    return np.ascontiguousarray(w.transpose(perm).reshape(out_ch, -1))


def flatten_to_kernel_order(q: np.ndarray, channels: int, positions: int) -> np.ndarray:
    """Reorder linear columns after ``flatten``: torch ``[c, pos]`` -> ``[pos, c]``."""
    out_ch = q.shape[0]
    w = q.reshape(out_ch, channels, positions).transpose(0, 2, 1)
    return np.ascontiguousarray(w.reshape(out_ch, -1))
