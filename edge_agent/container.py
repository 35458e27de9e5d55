"""The sealed file layout shared by model bundles and agent checkpoints.

::

    magic    8 bytes  identifies the kind of file
    version  u16      format version of the payload
    flags    u16      0 (reserved)
    length   u64      payload length in bytes
    sha256   32 bytes digest of the payload
    payload  bytes

All integers little-endian.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from kernels.digest import sha256

HEADER = struct.Struct("<8sHHQ32s")


def seal(magic: bytes, version: int, payload: bytes) -> bytes:
    """Header (magic, version, length, sha256) followed by ``payload``."""
    return HEADER.pack(magic, version, 0, len(payload), sha256(payload).digest()) + payload


def unseal(
    data: bytes, magic: bytes, version: int, kind: str, source: str, error: type[Exception]
) -> bytes:
    """The payload of sealed ``data``; raise ``error`` naming the problem (truncation,
    wrong magic or version, trailing bytes, checksum) for a file of this ``kind``."""
    if len(data) < HEADER.size:
        raise error(f"{source}: truncated: {len(data)} bytes is shorter than the header")
    got_magic, got_version, _flags, length, digest = HEADER.unpack_from(data)
    if got_magic != magic:
        raise error(f"{source}: not an edge-agent {kind} (bad magic {got_magic!r})")
    if got_version != version:
        raise error(
            f"{source}: {kind} format version {got_version} is not supported "
            f"(this edge-agent reads version {version})"
        )
    payload = data[HEADER.size :]
    if len(payload) < length:
        raise error(f"{source}: truncated: payload has {len(payload)} of {length} bytes")
    if len(payload) > length:
        raise error(f"{source}: {len(payload) - length} unexpected bytes after the payload")
    if sha256(payload).digest() != digest:
        raise error(f"{source}: checksum mismatch: the file is corrupt or was modified")
    return payload


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, directory fsync.

    The file gets ``mode`` when given (the agent's state files: 0600), else what the
    process's umask allows a new file (0666 minus the umask), as ``open`` would give it:
    the temp file's own 0600 must not leak out, nor a fixed 0644 override ``UMask=``.
    """
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (setting it
    to read it back races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
