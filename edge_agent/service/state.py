"""The crash-safe state store under the state directory.

Two kinds of file:

* ``checkpoint-<generation>.eas`` — counters, sequence positions and model version,
  written atomically (temp file, fsync, rename, directory fsync) every checkpoint
  interval and at shutdown; the newest ``keep`` are kept. On start the newest one that
  reads back intact is used; a corrupt one is moved to ``corrupt/`` with a log line.
* ``model.eab`` — the running model with its calibrated weights; the ``keep`` models it
  replaced stay as ``model-<n>.eab``, the fallback when ``model.eab`` is damaged.
* ``labelled-<segment>.log`` — an append-only log of accepted labelled samples (the
  source of the QCore buffer). Each record is ``u32 length, u32 crc32, msgpack``; records
  are written as they are accepted and fsynced at every checkpoint, so a ``kill -9``
  loses none and a power cut none older than the checkpoint interval. A torn tail is cut
  off on start. Old segments are removed once ``capacity`` newer records exist.

Every file is created 0600: they hold the user's data and model.

File header of a checkpoint (little-endian): magic ``b"EDGEAGS\\0"``, u16 version, u16
flags, u64 payload length, 32-byte sha256 of the payload, then the msgpack payload.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from edge_agent.container import HEADER, atomic_write_bytes, fsync_dir, seal, unseal
from edge_agent.ingest.protocol import unpack_one

log = logging.getLogger(__name__)

MAGIC = b"EDGEAGS\x00"
STATE_VERSION = 1
_RECORD = struct.Struct("<II")
MAX_CHECKPOINT_BYTES = 64 << 20
MAX_RECORD_BYTES = 16 << 20
_CKPT_RE = re.compile(r"^checkpoint-(\d{12})\.eas$")
_SEG_RE = re.compile(r"^labelled-(\d{12})\.log$")
_MODEL_RE = re.compile(r"^model-(\d{12})\.eab$")
FILE_MODE = 0o600  # state files hold user data, whatever the umask


class StateError(ValueError):
    """A state file that cannot be used."""


@dataclass(frozen=True)
class LabelledSample:
    """An accepted sample with its true label (and the prediction made for it, or -1)."""

    sensor: str
    seq: int
    ts: float
    label: int
    pred: int
    x: np.ndarray

    def to_record(self) -> bytes:
        """Serialize as one log record (length, crc32, msgpack)."""
        x = np.ascontiguousarray(self.x, dtype="<f4")
        body = msgpack.packb(
            {
                "sensor": self.sensor,
                "seq": self.seq,
                "ts": self.ts,
                "label": self.label,
                "pred": self.pred,
                "shape": list(x.shape),
                "data": x.tobytes(),
            },
            use_bin_type=True,
        )
        return _RECORD.pack(len(body), zlib.crc32(body)) + body

    @classmethod
    def from_body(cls, body: bytes) -> LabelledSample:
        """Parse a record body; raise StateError if it is not a labelled sample."""
        try:
            r = unpack_one(body, MAX_RECORD_BYTES)
            shape = tuple(int(s) for s in r["shape"])
            x = np.frombuffer(r["data"], dtype="<f4").reshape(shape).astype(np.float32)
            return cls(
                str(r["sensor"]), int(r["seq"]), float(r["ts"]), int(r["label"]), int(r["pred"]), x
            )
        except Exception as exc:  # any malformed content is the same failure
            raise StateError(f"bad labelled record: {exc}") from None


def encode_checkpoint(payload: dict[str, Any]) -> bytes:
    """Serialize a checkpoint payload with header and checksum."""
    return seal(MAGIC, STATE_VERSION, msgpack.packb(payload, use_bin_type=True))


def decode_checkpoint(data: bytes, source: str) -> dict[str, Any]:
    """Parse a checkpoint file's bytes; raise StateError naming the problem."""
    body = unseal(data, MAGIC, STATE_VERSION, "checkpoint", source, StateError)
    try:
        payload = unpack_one(body, MAX_CHECKPOINT_BYTES, strict_map_key=False)
    except Exception as exc:
        raise StateError(f"{source}: payload is not msgpack: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("generation"), int):
        raise StateError(f"{source}: payload lacks a generation")
    return payload


@dataclass
class PendingCheckpoint:
    """A checkpoint numbered by its owner and not yet written (see
    :meth:`StateStore.prepare_checkpoint`)."""

    path: Path
    body: dict[str, Any]
    log_fd: int | None  # a duplicate of the log's descriptor, closed once synced
    log_error: OSError | None = None
    ms: float = 0.0  # how long the write took


class StateStore:
    """Checkpoints and the labelled-sample log in one directory. Used by one thread,
    except :meth:`write_checkpoint`, which may run on another (one at a time)."""

    def __init__(self, directory: Path, keep: int = 3, capacity: int = 4096) -> None:
        self.dir = Path(directory)
        self.keep = keep
        self.capacity = capacity
        self.generation = 0
        self._seg_index = 0
        self._seg_records = 0
        self._seg_fd: int | None = None
        self._uncut: set[str] = set()  # segments whose torn tail could not be cut
        self._seg_size = 0  # bytes of whole records in the open segment
        self.corrupt_found = 0

    # ------------------------------------------------------------ restore

    def restore(self) -> tuple[dict[str, Any] | None, list[LabelledSample]]:
        """Load the newest valid checkpoint and the newest labelled samples (up to
        ``capacity``); set corrupt checkpoints aside and cut torn log tails."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # named: the bare error did not say which setting it was
            raise OSError(f"[state] dir {self.dir}: {exc.strerror or exc}") from None
        for tmp in self.dir.glob(".checkpoint-*.tmp"):  # a write cut short by a crash
            log.info("removing unfinished checkpoint %s", tmp.name)
            try:
                tmp.unlink(missing_ok=True)
            except OSError as exc:  # a read-only card: restore reads on regardless
                log.error("cannot remove %s: %s", tmp.name, exc)
        payload = None
        # Generations keep increasing, past any file set aside below.
        newest = max((_number(p, _CKPT_RE) for p in self._files(_CKPT_RE)), default=0)
        for path in sorted(self._files(_CKPT_RE), reverse=True):
            try:
                if path.stat().st_size > MAX_CHECKPOINT_BYTES + HEADER.size:
                    raise StateError(f"{path}: larger than {MAX_CHECKPOINT_BYTES} bytes")
                payload = decode_checkpoint(path.read_bytes(), str(path))
            except (OSError, StateError) as exc:
                self.set_aside(path, str(exc))
                continue
            log.info("restored checkpoint %s (generation %d)", path.name, payload["generation"])
            break
        self.generation = newest
        samples: deque[LabelledSample] = deque(maxlen=max(self.capacity, 1))
        segments = sorted(self._files(_SEG_RE))
        for path in segments:
            samples.extend(self._read_segment(path))
        if segments:
            last = segments[-1]
            self._seg_index = _number(last, _SEG_RE)
            self._seg_records = sum(1 for _ in self._read_segment(last, repair=False))
            if last.name in self._uncut:  # never append after a torn record
                self._seg_index += 1
                self._seg_records = 0
        if samples:
            log.info(
                "restored %d labelled samples from %d log segment(s)", len(samples), len(segments)
            )
        return payload, list(samples) if self.capacity else []

    def _files(self, pattern: re.Pattern[str]) -> list[Path]:
        return [p for p in self.dir.iterdir() if pattern.match(p.name)]

    @property
    def model_path(self) -> Path:
        """Where the current model bundle is kept."""
        return self.dir / "model.eab"

    def save_model(self, data: bytes) -> None:
        """Atomically replace the current model bundle; the one it replaces is kept as
        ``model-<n>.eab`` (the newest ``keep`` of them) to fall back to."""
        try:
            old = self.model_path.read_bytes()
        except FileNotFoundError:
            old = None
        if old is not None and old != data:
            n = max((_number(p, _MODEL_RE) for p in self._files(_MODEL_RE)), default=0) + 1
            atomic_write_bytes(self.dir / f"model-{n:012d}.eab", old, FILE_MODE)
            for stale in sorted(self._files(_MODEL_RE), reverse=True)[max(self.keep, 1) :]:
                stale.unlink(missing_ok=True)
        atomic_write_bytes(self.model_path, data, FILE_MODE)

    def model_candidates(self) -> list[Path]:
        """``model.eab`` (if present), then the models it replaced, newest first."""
        current = [self.model_path] if self.model_path.exists() else []
        return current + sorted(self._files(_MODEL_RE), reverse=True)

    def forget_models(self) -> None:
        """Remove the kept previous models (they derive from another configured bundle)."""
        for old in self._files(_MODEL_RE):
            old.unlink(missing_ok=True)

    def set_aside(self, path: Path, why: str) -> None:
        """Move an unusable state file to ``corrupt/`` with a log line."""
        self.corrupt_found += 1
        aside = self.dir / "corrupt"
        # a wall-clock stamp repeats (same second, or the clock was stepped back): never
        # replace evidence set aside earlier
        stamp = int(time.time())
        target = aside / f"{path.name}.{stamp}"
        n = 0
        while target.exists():
            n += 1
            target = aside / f"{path.name}.{stamp}.{n}"
        try:
            aside.mkdir(exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            log.error("corrupt state file %s (%s); cannot move it aside: %s", path, why, exc)
            return
        log.error("corrupt state file set aside as %s: %s", target, why)

    def _read_segment(self, path: Path, repair: bool = True) -> list[LabelledSample]:
        data = path.read_bytes()
        out: list[LabelledSample] = []
        pos = 0
        while pos + _RECORD.size <= len(data):
            length, crc = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size : pos + _RECORD.size + length]
            if length > MAX_RECORD_BYTES or len(body) != length or zlib.crc32(body) != crc:
                break
            try:
                out.append(LabelledSample.from_body(body))
            except StateError:
                break
            pos += _RECORD.size + length
        if pos != len(data) and repair:
            log.warning(
                "%s: cut %d bytes of torn or corrupt tail after %d records",
                path.name,
                len(data) - pos,
                len(out),
            )
            try:
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
            except OSError as exc:  # read-only: restore still reads the whole records
                log.error("%s: cannot cut the torn tail: %s", path.name, exc)
                self._uncut.add(path.name)
        return out

    # ------------------------------------------------------------ writing

    def append_labelled(self, samples: list[LabelledSample]) -> None:
        """Append accepted labelled samples to the log (one write; durable against a
        process kill at once, against power loss at the next checkpoint)."""
        if not samples or not self.capacity:
            return
        if self._seg_fd is None or self._seg_records >= self.capacity:
            self._rotate()
        assert self._seg_fd is not None
        data = b"".join(s.to_record() for s in samples)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._seg_fd, view) :]
        except OSError:
            self._abandon_segment()
            raise
        self._seg_size += len(data)
        self._seg_records += len(samples)

    def _abandon_segment(self) -> None:
        """After a failed write (disk full, read-only): cut the partial record off if
        the file system lets us and close the segment (which also lets the file system
        be unmounted); the next append continues it, or starts a new segment if its tail
        could not be cut (restore cuts such a tail)."""
        fd, self._seg_fd = self._seg_fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._seg_size)
        except OSError:
            self._seg_index += 1
            self._seg_records = 0
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        """Open the segment to append to: a new one once the current one is full."""
        fd, self._seg_fd = self._seg_fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self._seg_records >= self.capacity:
            self._seg_index += 1
            self._seg_records = 0
        path = self.dir / f"labelled-{self._seg_index:012d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._seg_size = os.fstat(fd).st_size
        self._seg_fd = fd
        fsync_dir(self.dir)
        for old in self._files(_SEG_RE):  # the previous segment plus this one cover capacity
            if _number(old, _SEG_RE) < self._seg_index - 1:
                old.unlink(missing_ok=True)

    def checkpoint(self, payload: dict[str, Any]) -> Path:
        """Make the log durable, then write the next checkpoint generation atomically and
        remove checkpoints beyond ``keep``."""
        pending = self.prepare_checkpoint(payload)
        try:
            return self.write_checkpoint(pending)
        finally:
            if pending.log_error is not None:
                self.abandon_log()

    def prepare_checkpoint(self, payload: dict[str, Any]) -> PendingCheckpoint:
        """The owning thread's part of a checkpoint: number it and take a duplicate of the
        log's descriptor, so :meth:`write_checkpoint` can run on another thread while
        this one goes on appending (and rotating) the log."""
        self.generation += 1
        body = dict(payload, generation=self.generation, written=time.time())
        log_fd = None
        if self._seg_fd is not None:
            try:
                log_fd = os.dup(self._seg_fd)
            except OSError as exc:  # out of descriptors: the log waits for the next one
                log.error("labelled log: cannot sync it with this checkpoint: %s", exc)
        return PendingCheckpoint(self.dir / f"checkpoint-{self.generation:012d}.eas", body, log_fd)

    def write_checkpoint(self, pending: PendingCheckpoint) -> Path:
        """The disk's part (any one thread at a time): fsync the log (everything written
        before :meth:`prepare_checkpoint` and maybe more; a failure is recorded in
        ``pending.log_error`` for the owner to act on), then write the checkpoint file
        atomically and remove those beyond ``keep``. Raises OSError if the file fails."""
        t0 = time.perf_counter()
        if pending.log_fd is not None:
            try:
                os.fsync(pending.log_fd)
            except OSError as exc:  # the log's own error; the checkpoint may still work
                log.error("labelled log: fsync failed: %s", exc)
                pending.log_error = exc
            finally:
                os.close(pending.log_fd)
                pending.log_fd = None
        try:
            atomic_write_bytes(pending.path, encode_checkpoint(pending.body), FILE_MODE)
            for old in sorted(self._files(_CKPT_RE), reverse=True)[self.keep :]:
                old.unlink(missing_ok=True)
        finally:
            pending.ms = (time.perf_counter() - t0) * 1e3
        return pending.path

    def abandon_log(self) -> None:
        """After the log failed to sync: close its segment as after a failed write."""
        self._abandon_segment()

    def close(self) -> None:
        """Flush and close the log (a failing disk is logged, not raised)."""
        fd, self._seg_fd = self._seg_fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("labelled log: fsync at close failed: %s", exc)
            finally:
                os.close(fd)


def _number(path: Path, pattern: re.Pattern[str]) -> int:
    m = pattern.match(path.name)
    assert m is not None
    return int(m.group(1))
