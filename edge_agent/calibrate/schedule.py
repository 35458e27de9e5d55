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
- ``label``: a label-rung round on the latest labelled samples, every ``label_every``
  of them, alarm or not (a drift in the labels alone raises none).
- ``stats``: one statistics-rung round (:mod:`edge_agent.calibrate.stats_rung`) on the
  stream samples since the alarm's change point, made ``stats_min_samples`` samples after
  that point (at the alarm if there are already enough), and again each time the samples
  since that point have doubled, up to ``stats_rounds`` in an episode: a correction the
  few labels at the first one could not vouch for gets another look with more of them
  (the controller runs none once one was kept in the episode).

**Falling behind.** A round job queued while ``max_backlog`` wait skips the oldest waiting
one (a flip becomes an ``update``: its chunk still reaches the buffer; counted in
``rounds_skipped``, the only way two runs of one stream can give different models). Over
``MAX_JOBS`` waiting jobs: the oldest is dropped (``updates_dropped``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.calibrate.drift_signal import DriftSignal
from edge_agent.engine.engine import ModelKey

log = logging.getLogger(__name__)


MAX_JOBS = 64


def seq_codes(seqs: list[int]) -> np.ndarray:
    """Stream sequence numbers (0..2^64-1) as the int64 the QCore buffer stores them in
    (two's complement: 2^63 and above come out negative)."""
    return np.asarray(seqs, dtype=np.uint64).view(np.int64)


def distinct(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``(X, y)`` with distinct inputs, in order of their last occurrence: a
    sample the stream replays is one piece of evidence, however often it comes by."""
    flat = np.ascontiguousarray(X.reshape(len(X), -1))
    _, last = np.unique(flat[::-1], axis=0, return_index=True)
    keep = np.sort(len(X) - 1 - last)
    return X[keep], y[keep]


@dataclass
class Job:
    """One unit of calibration work, with the data it runs on."""

    index: int  # 0, 1, ... in stream order: the round's seed
    at: int  # stream samples seen when it was made
    kind: str  # "update" | "flip" | "stats" | "label"
    X: np.ndarray | None = None  # the chunk (update, flip) or the stream window (stats)
    y: np.ndarray | None = None  # chunk targets, -1 where unlabelled
    seqs: np.ndarray | None = None
    labels: list[tuple[int, int]] = field(default_factory=list)  # late labels before it
    recent: tuple[np.ndarray, np.ndarray] | None = None  # labelled (X, y): see StreamScheduler
    skipped: bool = False
    episode: int = -1  # the alarm sample of the episode that made it (-1: none)


@dataclass
class Episode:
    """What a drift alarm set going."""

    alarm: int
    change_point: int
    stats_at: int  # sample count at which the next statistics round is made
    flips_left: int
    stats_left: int = 1  # statistics rounds still to make


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
            if oldest.kind in ("stats", "label"):  # no chunk for the buffer: nothing left
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


@dataclass(frozen=True)
class Pending:
    """A candidate sample waiting for its chunk to fill."""

    x: np.ndarray
    label: int | None
    seq: int
    time: float


@dataclass(frozen=True)
class ScheduleConfig:
    """The stream-side knobs (from the agent's ``[calibration]`` section)."""

    chunk: int = 32
    label_free: bool = True
    unlabelled_every: int = 8
    recent_labelled: int = 64
    trigger: str = "drift"
    episode_rounds: int = 8
    stats_window: int = 256
    stats_min_samples: int = 64
    stats_rounds: int = 4
    max_backlog: int = 4
    label_every: int = 64  # labelled samples per label round (0: none)


class StreamScheduler:
    """The stream side of the calibration (see the module text): every accepted sample goes
    through :meth:`observe` in stream order, due jobs come out of :meth:`get`. ``drift``
    None: a flip round every chunk; ``stats``: whether statistics jobs are made;
    ``count(name, n)`` receives every counter."""

    def __init__(
        self,
        cfg: ScheduleConfig,
        drift: DriftSignal | None,
        stats: bool,
        count: Callable[[str, int], None],
    ) -> None:
        self.cfg, self.drift, self.stats, self.count = cfg, drift, stats, count
        self.alarms = 0
        self.episode: Episode | None = None
        self.seen = 0  # accepted stream samples
        self._chunk: list[Pending] = []
        self._recent: deque[tuple[np.ndarray, int]] = deque(maxlen=cfg.recent_labelled)
        self._window: deque[tuple[int, np.ndarray, int | None]] = deque(maxlen=cfg.stats_window)
        # labelled samples (index, x, label) an episode's rounds are vouched for on
        self._labelled: deque[tuple[int, np.ndarray, int]] = deque(maxlen=cfg.stats_window)
        self._labels: list[tuple[int, int]] = []  # feedback since the last job
        self._scores: deque[np.ndarray] = deque()  # (N, 2) blocks scored ahead (prescore)
        self._unlabelled_seen = 0
        self._labelled_seen = 0
        self._jobs = JobQueue(cfg.max_backlog)
        self._made = 0
        self._lock = threading.Lock()  # the inference thread writes, the calibration reads

    def prescore(
        self, X: np.ndarray, logits: np.ndarray | None = None, key: ModelKey | None = None
    ) -> None:
        """Score the next samples for the drift signal in one call (a batch, before its
        samples go through :meth:`observe_many` in the same order); ``logits`` of the
        model ``key``, see :meth:`DriftSignal.score`."""
        if self.drift is not None and len(X):
            self._scores.append(self.drift.score(X, logits, key))

    def _take_scores(self, X: np.ndarray) -> np.ndarray:
        """Drift scores of the next ``len(X)`` samples: the prescored ones first, the rest
        (none when the caller prescored the batch) scored now."""
        assert self.drift is not None
        parts: list[np.ndarray] = []
        n = len(X)
        while n and self._scores:
            head = self._scores[0]
            take = min(n, len(head))
            parts.append(head[:take])
            if take == len(head):
                self._scores.popleft()
            else:
                self._scores[0] = head[take:]
            n -= take
        if n:
            parts.append(self.drift.score(X[len(X) - n :]))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def observe(self, x: np.ndarray, label: int | None, seq: int) -> None:
        """One accepted sample: :meth:`observe_many` of one."""
        self.observe_many(np.asarray(x)[None], [label], [seq])

    def observe_many(self, X: np.ndarray, labels: list[int | None], seqs: list[int]) -> None:
        """Accepted samples in stream order (every one: the drift signal and the
        statistics window see them all; chunks take labelled ones and one in
        ``unlabelled_every`` unlabelled ones when label-free). One call per run of
        samples: one copy, one drift update and one lock for all of them."""
        if not len(X):
            return
        # One copy of the run, owned here (the caller may reuse its array): the window
        # keeps views of its rows; what lives longer (chunk, recent) copies its row.
        X = np.array(X, dtype=np.float32)
        scores = self._take_scores(X) if self.drift is not None else None
        # After an alarm the signal holds for ``hold`` samples: a piece of hold + 1 has at
        # most one, so the alarm's change point is still the signal's after the piece.
        step = len(X) if self.drift is None else max(1, self.drift.cfg.hold + 1)
        for s in range(0, len(X), step):
            fired = -1
            if self.drift is not None and scores is not None:
                n0 = self.drift.n  # its stream indices -> positions in this piece
                alarms = self.drift.update_scores(scores[s : s + step])
                fired = alarms[0] - n0 + s if alarms else -1
            self._observe_locked(X, labels, seqs, s, min(len(X), s + step), fired)

    def _observe_locked(
        self,
        X: np.ndarray,
        labels: list[int | None],
        seqs: list[int],
        start: int,
        stop: int,
        fired: int,
    ) -> None:
        """The stream side of samples ``start:stop`` (``fired``: the position of the drift
        alarm among them, -1 for none)."""
        cfg = self.cfg
        every, label_free = max(1, cfg.unlabelled_every), cfg.label_free
        with self._lock:
            for k in range(start, stop):
                x, label = X[k], labels[k]
                n = self.seen
                self.seen += 1
                self._window.append((n, x, label))
                if label is not None:
                    kept = x.copy()
                    self._recent.append((kept, label))
                    self._labelled.append((n, kept, label))
                    self._labelled_seen += 1
                    if cfg.label_every and not self._labelled_seen % cfg.label_every:
                        self._put(Job(self._made, self.seen, "label", recent=self._latest()))
                if k == fired:
                    self._alarm(n)
                ep = self.episode
                if ep is not None and ep.stats_left > 0 and self.seen >= ep.stats_at:
                    ep.stats_left -= 1  # next when the samples since the change point doubled
                    ep.stats_at = ep.change_point + 2 * (self.seen - ep.change_point)
                    if self.stats:
                        self._put_stats(ep)
                if label is None:
                    if not label_free:
                        continue
                    self._unlabelled_seen += 1
                    if self._unlabelled_seen % every:
                        continue
                self._chunk.append(Pending(x.copy(), label, seqs[k], time.time()))
                if len(self._chunk) >= max(1, cfg.chunk):
                    self._put_chunk()

    def _alarm(self, n: int) -> None:
        assert self.drift is not None
        cp = self.drift.change_point if self.drift.change_point is not None else n
        self.alarms += 1
        self.count("drift_alarms", 1)
        self.count(f"drift_alarms_{self.drift.fired_by or 'input'}", 1)
        log.info(
            "drift signal: alarm at stream sample %d (change point %d, %s score)",
            n,
            cp,
            self.drift.fired_by,
        )
        self.episode = Episode(
            n,
            cp,
            max(n + 1, cp + self.cfg.stats_min_samples),
            self.cfg.episode_rounds,
            max(0, self.cfg.stats_rounds),
        )

    def _rounds_due(self) -> bool:
        """Whether the chunk just completed gets a flip round."""
        if self.cfg.trigger == "samples" or self.drift is None:
            return True
        ep = self.episode
        if ep is None or ep.flips_left <= 0:
            return False
        ep.flips_left -= 1
        return True

    def _since(self, ep: Episode) -> tuple[np.ndarray, np.ndarray] | None:
        """The distinct labelled samples since the episode's change point (the latest
        ``stats_window`` labelled ones), or None."""
        rows = [(x, c) for i, x, c in self._labelled if i >= ep.change_point]
        if not rows:
            return None
        return distinct(np.stack([x for x, _ in rows]), np.array([c for _, c in rows], np.int64))

    def _latest(self) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``recent_labelled`` labelled samples (inputs, labels)."""
        X = np.array([x for x, _ in self._recent], np.float32)
        return X, np.array([c for _, c in self._recent], np.int64)

    def _put_chunk(self) -> None:
        chunk, self._chunk = self._chunk, []
        labels, self._labels = self._labels, []
        due = self._rounds_due()
        ep = self.episode if due and self.cfg.trigger == "drift" else None
        recent = self._since(ep) if ep is not None else None
        if recent is None and self._recent:  # outside an episode: the latest labelled
            recent = self._latest()
        job = Job(
            self._made,
            self.seen,
            "flip" if due else "update",
            np.stack([p.x for p in chunk]),
            np.array([p.label if p.label is not None else -1 for p in chunk], np.int64),
            seq_codes([p.seq for p in chunk]),
            labels,
            recent,
            episode=-1 if ep is None else ep.alarm,
        )
        self._put(job)

    def _put_stats(self, ep: Episode) -> None:
        rows = [x for i, x, _ in self._window if i >= ep.change_point]
        job = Job(self._made, self.seen, "stats", np.stack(rows), recent=self._since(ep))
        job.episode = ep.alarm
        self._put(job)

    def _put(self, job: Job) -> None:
        self._made += 1
        skipped, dropped = self._jobs.skipped, self._jobs.dropped
        self._jobs.put(job)
        if self._jobs.skipped > skipped:
            self.count("rounds_skipped", 1)
            log.warning(
                "calibration is behind: a round was skipped (%d so far)", self._jobs.skipped
            )
        if self._jobs.dropped > dropped:
            self.count("updates_dropped", 1)

    def feedback(self, seq: int, label: int) -> None:
        """A late label: goes with the next job (at once if its sample waits in the chunk)."""
        with self._lock:
            self._labels.append((seq, label))
            for i, p in enumerate(self._chunk):
                if p.seq == seq:
                    self._chunk[i] = dataclasses.replace(p, label=label)

    def get(self) -> Job | None:
        """The oldest due job, or None."""
        with self._lock:
            return self._jobs.get()

    def waiting(self) -> tuple[int, int]:
        """Candidates in the open chunk and jobs waiting."""
        with self._lock:
            return len(self._chunk), len(self._jobs)

    def status(self) -> dict[str, Any]:
        """The drift signal and the episode, for status."""
        with self._lock:
            ep = self.episode
            return {
                "trigger": self.cfg.trigger if self.drift is not None else "samples",
                "drift": self.drift.status() if self.drift is not None else {"enabled": False},
                "episode": None
                if ep is None
                else {
                    "alarm": ep.alarm,
                    "change_point": ep.change_point,
                    "flip_rounds_left": ep.flips_left,
                },
            }
