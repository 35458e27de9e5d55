"""Sample-driven calibration schedule: which round runs on what, decided by the stream.

Everything here happens in stream order, on the thread that offers samples (the agent's
inference loop, or a benchmark's loop): the sample counter, the drift signal, the chunks
of candidate samples, the labels, and the decision that a *job* is due. A job carries a
snapshot of everything its round needs (the chunk, the labels that arrived before it,
the latest labelled samples, for a statistics round the recent stream window), so the
calibration thread that runs it later computes the same thing whenever it gets to it:
the same stream gives the same sequence of models whatever the CPU load.

Jobs, in stream order:

- ``update``: the QCore buffer takes a chunk of ``chunk`` candidate samples (forward
  passes only); every chunk makes one.
- ``flip``: the same, then one gated bit-flip round on the buffer. With
  ``trigger = "samples"`` every chunk is one; with ``trigger = "drift"`` (the default) only
  the ``episode_rounds`` chunks completed after a drift alarm.
- ``stats``: one statistics-rung round (:mod:`edge_agent.calibrate.stats_rung`) on the
  stream samples since the alarm's change point, made ``stats_min_samples`` samples after
  that point (at the alarm if there are already enough).

**Falling behind.** When a round job is queued while ``max_backlog`` round jobs already
wait, the oldest waiting one is *skipped*: it becomes an ``update`` (its chunk still
reaches the buffer) and ``rounds_skipped`` counts it. A skipped round is the only way
two runs of one stream can give different models, and status says how many there were.
More than ``MAX_JOBS`` waiting jobs of any kind: the oldest is dropped altogether
(``updates_dropped``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

MAX_JOBS = 64


@dataclass
class Job:
    """One unit of calibration work, with the data it runs on."""

    index: int  # 0, 1, ... in stream order: the round's seed
    at: int  # stream samples seen when it was made
    kind: str  # "update" | "flip" | "stats"
    X: np.ndarray | None = None  # the chunk (update, flip) or the stream window (stats)
    y: np.ndarray | None = None  # chunk targets, -1 where unlabelled
    seqs: np.ndarray | None = None
    labels: list[tuple[int, int]] = field(default_factory=list)  # late labels before it
    recent: tuple[np.ndarray, np.ndarray] | None = None  # latest labelled (X, y)
    skipped: bool = False


@dataclass
class Episode:
    """What a drift alarm set going."""

    alarm: int
    change_point: int
    stats_at: int  # sample count at which the statistics round is made
    flips_left: int
    stats_done: bool = False


class JobQueue:
    """Jobs waiting for the calibration thread, with the falling-behind rule."""

    def __init__(self, max_backlog: int) -> None:
        self.max_backlog = max(1, max_backlog)
        self.jobs: deque[Job] = deque()
        self.skipped = 0
        self.dropped = 0

    def put(self, job: Job) -> None:
        """Queue a job; skip the oldest waiting round or drop the oldest job if needed."""
        self.jobs.append(job)
        rounds = [j for j in self.jobs if j.kind != "update"]
        if job.kind != "update" and len(rounds) > self.max_backlog:
            oldest = rounds[0]
            if oldest.kind == "stats":  # no chunk to give the buffer: nothing left to do
                self.jobs.remove(oldest)
            else:
                oldest.kind = "update"
            oldest.skipped = True
            self.skipped += 1
        if len(self.jobs) > MAX_JOBS:
            self.jobs.popleft()
            self.dropped += 1

    def get(self) -> Job | None:
        """The oldest waiting job, or None."""
        return self.jobs.popleft() if self.jobs else None

    def __len__(self) -> int:
        return len(self.jobs)
