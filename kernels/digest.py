"""SHA-256 without OpenSSL, for the engine-only process (numba-free, numpy-free).

``hashlib`` loads ``_hashlib``, i.e. OpenSSL's libcrypto: 3.7 MB of peak RSS in a process
that needs SHA-256 only to check bundle containers, AOT manifests and name model versions.
CPython's own SHA-256 (``_sha256`` up to 3.11, ``_sha2`` since 3.12) gives the same digests
for 40 kB; ``hashlib`` stays the fallback where neither exists.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol


class Hash(Protocol):
    """What callers use of a SHA-256 object (``hashlib``'s interface)."""

    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


def _constructor() -> Any:
    for name in ("_sha2", "_sha256"):  # CPython >= 3.12, 3.11
        try:
            return importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
    import hashlib  # another implementation: pay for OpenSSL

    return hashlib.sha256


_SHA256 = _constructor()


def sha256(data: bytes = b"") -> Hash:
    """A new SHA-256 object fed ``data`` (as ``hashlib.sha256(data)``)."""
    h: Hash = _SHA256(data)
    return h


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents, read ``block`` bytes at a time."""
    h = sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
