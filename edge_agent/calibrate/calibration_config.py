"""The ``[calibration]`` section of the agent's configuration, and the knobs each part of
the calibration takes from it (flip rounds, the QCore buffer, the drift signal, the
stream-side schedule)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.calibrate.drift_signal import DriftConfig
from edge_agent.calibrate.flip_round import FlipConfig
from edge_agent.calibrate.qcore import BufferConfig
from edge_agent.calibrate.schedule import ScheduleConfig


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``[calibration]`` section of the agent's configuration."""

    enabled: bool = True
    chunk: int = 32  # stream samples per QCore update and flip round
    label_free: bool = True  # also learn from unlabelled samples (FP pseudo-labels)
    unlabelled_every: int = 8  # keep one unlabelled sample in this many as a candidate
    buffer_samples: int = 64
    buffer_bytes: int = 1 << 20
    class_balance: bool = True
    neighbour_bits: int = 1  # QCore miss tracking at the deployed width and this many around it
    budget_fraction: float = 0.02
    threshold: float = 0.5
    iterations: int = 4
    holdout_fraction: float = 0.3
    min_holdout: int = 4
    tolerance: float = 0.0
    anchor_tolerance: float = 0.05
    recent_labelled: int = 64  # latest labelled stream samples a kept round may not do worse on
    trigger: str = "drift"  # "drift": rounds only after a drift alarm; "samples": every chunk
    episode_rounds: int = 8  # flip rounds (one per chunk) after each drift alarm
    stats_rung: bool = True  # the label-free statistics round first after an alarm
    stats_window: int = 256  # latest stream samples kept for the statistics round
    stats_min_samples: int = 64  # samples since the change point before it runs
    drift_allowance: float = 1.0  # CUSUM k, in standard deviations of the novelty score
    drift_threshold: float = 20.0  # CUSUM h
    drift_hold: int = 1024  # samples after an alarm before the signal re-baselines
    drift_baseline: int = 256  # samples its new level is estimated from
    max_backlog: int = 4  # rounds waiting for the calibration thread; more: skip the oldest

    def schedule_config(self) -> ScheduleConfig:
        """The stream side's knobs."""
        return ScheduleConfig(
            self.chunk,
            self.label_free,
            self.unlabelled_every,
            self.recent_labelled,
            self.trigger,
            self.episode_rounds,
            self.stats_window,
            self.stats_min_samples,
            self.max_backlog,
        )

    def drift_config(self) -> DriftConfig:
        """The drift signal's knobs."""
        return DriftConfig(
            allowance=self.drift_allowance,
            threshold=self.drift_threshold,
            hold=self.drift_hold,
            baseline=self.drift_baseline,
        )

    def flip_config(self) -> FlipConfig:
        """The flip-round knobs."""
        return FlipConfig(
            self.budget_fraction,
            self.threshold,
            self.iterations,
            self.holdout_fraction,
            self.min_holdout,
            self.tolerance,
            self.anchor_tolerance,
        )

    def buffer_config(self) -> BufferConfig:
        """The QCore buffer's bounds."""
        return BufferConfig(
            max_samples=self.buffer_samples,
            max_bytes=self.buffer_bytes,
            class_balance=self.class_balance,
        )
