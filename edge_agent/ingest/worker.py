"""One daemon thread running a worker's ``_run`` loop until ``stop``: the start / alive /
stop shared by the ingest sources and the status server."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

COMM = Path("/proc/thread-self/comm")


class ThreadWorker:
    """Subclasses set up their resources, then call ``ThreadWorker.__init__`` (which creates
    the thread), and implement ``_run`` (looping until ``self._stop`` is set, releasing
    its resources on the way out) and, when needed, ``_release_unstarted``."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._named_run, name=self.thread_name, daemon=True)

    def _named_run(self) -> None:
        name_os_thread(self.thread_name)
        self._run()

    def _run(self) -> None:
        raise NotImplementedError

    def _release_unstarted(self) -> None:
        """Release what ``_run`` would have released on its way out (never started)."""

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The OS thread id once started."""
        return self._thread.native_id

    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait for it up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        else:
            self._release_unstarted()


def name_os_thread(name: str) -> None:
    """Give the calling thread its name in the OS too (Linux: ``top -H``, ``ps -L`` and
    /proc show it; 15 bytes at most); nothing where the system offers no way to."""
    with contextlib.suppress(OSError):
        COMM.write_bytes(name.encode()[:15])
