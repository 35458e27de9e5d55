"""Serial ingest via pyserial, line- or frame-based, reconnecting when the device goes away.

Line framing: one sample per ``\\n``-terminated ASCII line, the values comma- or
space-separated in channel-major order (all C x T values of a window), optionally
followed by ``;LABEL``. Empty lines and lines starting with ``#`` are ignored. The agent
numbers the lines as the sensor's sequence.

Frame framing: ``EA 01``, u32 little-endian payload length, the payload (a protocol v1
``sample`` or ``label`` msgpack message), u32 little-endian CRC-32 of the payload. After
a bad frame the reader resynchronises on the next ``EA 01``.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib

import numpy as np
import serial

from edge_agent.ingest.config import SerialConfig
from edge_agent.ingest.intake import Intake
from edge_agent.ingest.protocol import ProtocolError, Sample
from edge_agent.ingest.worker import ThreadWorker

log = logging.getLogger(__name__)

FRAME_SYNC = b"\xea\x01"
_LEN = struct.Struct("<I")
MAX_LINE = 1 << 16
READ_TIMEOUT_S = 0.1


def frame(payload: bytes) -> bytes:
    """Wrap a protocol message in a serial frame."""
    return FRAME_SYNC + _LEN.pack(len(payload)) + payload + _LEN.pack(zlib.crc32(payload))


def format_line(x: np.ndarray, label: int | None = None) -> bytes:
    """Format a sample as a serial text line."""
    text = ",".join(f"{v:.7g}" for v in np.asarray(x, dtype=np.float32).ravel())
    return (text + (f";{label}" if label is not None else "") + "\n").encode()


class SerialSource(ThreadWorker):
    """Reads a serial port in a thread and feeds the intake."""

    thread_name = "ingest-serial"

    def __init__(self, cfg: SerialConfig, intake: Intake) -> None:
        self.cfg = cfg
        self.intake = intake
        self._buf = bytearray()
        self._seq = 0
        self.connected = threading.Event()
        super().__init__()

    def _run(self) -> None:
        reported = False
        opened_before = False
        while not self._stop.is_set():
            try:
                port = serial.serial_for_url(
                    self.cfg.port, baudrate=self.cfg.baud, timeout=READ_TIMEOUT_S
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                self.intake.metrics.inc("serial_open_failures")
                if not reported:
                    log.warning(
                        "serial %s unavailable (%s); retrying every %.1f s",
                        self.cfg.port,
                        exc,
                        self.cfg.reconnect_s,
                    )
                    reported = True
                self._stop.wait(self.cfg.reconnect_s)
                continue
            log.info(
                "serial %s open at %d baud (%s framing)",
                self.cfg.port,
                self.cfg.baud,
                self.cfg.framing,
            )
            reported = False
            if opened_before:
                self.intake.metrics.inc("serial_reconnects")
            opened_before = True
            self._buf.clear()
            self.connected.set()
            try:
                self._read(port)
            except (serial.SerialException, OSError) as exc:
                log.warning("serial %s lost: %s; reconnecting", self.cfg.port, exc)
                self.intake.metrics.inc("serial_disconnects")
                self._stop.wait(self.cfg.reconnect_s)
            finally:
                self.connected.clear()
                port.close()

    def _read(self, port: serial.SerialBase) -> None:
        while not self._stop.is_set():
            chunk = port.read(max(1, port.in_waiting))
            if not chunk:
                continue
            self._buf += chunk
            if self.cfg.framing == "line":
                self._lines()
            else:
                self._frames()

    def _lines(self) -> None:
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._buf.clear()
                    self.intake.reject(ProtocolError("serial", f"line longer than {MAX_LINE}"))
                return
            line = bytes(self._buf[:end]).strip()
            del self._buf[: end + 1]
            if line and not line.startswith(b"#"):
                self._line(line)

    def _line(self, line: bytes) -> None:
        arrived = time.perf_counter()
        values, _, label_text = line.partition(b";")
        shape = self.intake.input_shape
        try:
            x = np.array(values.replace(b",", b" ").split(), dtype=np.float32)
            label = int(label_text) if label_text.strip() else None
        except ValueError:
            self.intake.reject(ProtocolError("serial", "line is not numbers[;label]"))
            return
        if x.size != int(np.prod(shape)):
            self.intake.reject(
                ProtocolError(
                    "shape", f"line has {x.size} values, the model needs {int(np.prod(shape))}"
                )
            )
            return
        if not np.isfinite(x).all():
            self.intake.reject(ProtocolError("nonfinite", "line holds NaN or infinity"))
            return
        if label is not None and not 0 <= label < self.intake.num_classes:
            self.intake.reject(ProtocolError("label", f"label {label} out of range"))
            return
        self._seq += 1
        self.intake.submit(
            Sample(self.cfg.sensor, self._seq, time.time(), x.reshape(shape), label), arrived
        )

    def _frames(self) -> None:
        buf = self._buf
        while True:
            start = buf.find(FRAME_SYNC)
            if start < 0:
                if len(buf) > 1:  # keep a possible first sync byte
                    self._skip(len(buf) - 1)
                return
            if start:
                self._skip(start)
            if len(buf) < 6:
                return
            (length,) = _LEN.unpack_from(buf, 2)
            if length > self.intake.max_bytes:
                self.intake.reject(ProtocolError("oversized", f"serial frame of {length} bytes"))
                del buf[:2]
                continue
            if len(buf) < 10 + length:
                return
            payload = bytes(buf[6 : 6 + length])
            (crc,) = _LEN.unpack_from(buf, 6 + length)
            if zlib.crc32(payload) != crc:
                self.intake.reject(ProtocolError("serial", "frame CRC mismatch"))
                del buf[:2]
                continue
            del buf[: 10 + length]
            self.intake.submit_raw(payload)

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self.intake.metrics.inc("serial_bytes_skipped", n)
