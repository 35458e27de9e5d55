"""The ``[calibration]`` section of the agent's configuration, and the knobs each part of
the calibration takes from it (flip rounds, the QCore buffer, the drift signal, the
stream-side schedule).

Field metadata: ``range`` (lo, hi) and ``choices`` are what the config accepts (checked by
:mod:`edge_agent.service.config`); ``flatten`` keeps a nested section's keys in
``[calibration]`` itself (the flip-round knobs of :class:`FlipConfig`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edge_agent.calibrate.drift_signal import DriftConfig
from edge_agent.calibrate.flip_round import FlipConfig
from edge_agent.calibrate.qcore import BufferConfig
from edge_agent.calibrate.schedule import ScheduleConfig


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``[calibration]`` section of the agent's configuration."""

    enabled: bool = True
    # stream samples per QCore update and flip round
    chunk: int = field(default=32, metadata={"range": (1, 100_000)})
    label_free: bool = True  # also learn from unlabelled samples (FP pseudo-labels)
    # keep one unlabelled sample in this many as a candidate
    unlabelled_every: int = field(default=8, metadata={"range": (1, 1_000_000)})
    buffer_samples: int = field(default=64, metadata={"range": (1, 1_000_000)})
    buffer_bytes: int = field(default=1 << 20, metadata={"range": (1024, 1 << 32)})
    class_balance: bool = True
    # QCore miss tracking at the deployed width and this many around it
    neighbour_bits: int = field(default=1, metadata={"range": (0, 3)})
    # the flip-round knobs (budget_fraction ... anchor_tolerance), flat in [calibration]
    flip: FlipConfig = field(default_factory=FlipConfig, metadata={"flatten": True})
    # how the buffer is redrawn from old and new samples: "random" (uniform) or "qcore"
    # (by miss count); bench/round_cost.py: random held more accuracy on the real drifts
    buffer_draw: str = field(default="random", metadata={"choices": ("random", "qcore")})
    # latest labelled stream samples a kept round may not do worse on
    recent_labelled: int = field(default=64, metadata={"range": (0, 100_000)})
    # "drift": rounds only after a drift alarm; "samples": every chunk
    trigger: str = field(default="drift", metadata={"choices": ("drift", "samples")})
    # flip rounds (one per chunk) after each drift alarm
    episode_rounds: int = field(default=8, metadata={"range": (0, 100_000)})
    stats_rung: bool = True  # the label-free statistics round first after an alarm
    # route each sample to the correction of the domain its inputs look like
    route: bool = True
    # adapted domains kept beside the training domain (least recently used evicted)
    route_domains: int = field(default=3, metadata={"range": (1, 16)})
    # latest stream samples kept for the statistics round
    stats_window: int = field(default=256, metadata={"range": (2, 1_000_000)})
    # samples since the change point before it runs
    stats_min_samples: int = field(default=64, metadata={"range": (2, 1_000_000)})
    # statistics rounds an alarm may make (each once the samples since it doubled)
    stats_rounds: int = field(default=4, metadata={"range": (0, 64)})
    # CUSUM k, in standard deviations of the novelty score
    drift_allowance: float = field(default=1.0, metadata={"range": (0.0, 10.0)})
    drift_threshold: float = field(default=20.0, metadata={"range": (0.1, 1e6)})  # CUSUM h
    # the output score (the deployed model's predictive entropy) beside the input one
    drift_output: bool = True
    # its CUSUM k while it is watched against its training level
    drift_output_allowance: float = field(default=3.0, metadata={"range": (0.0, 10.0)})
    # samples after an alarm before the signal re-baselines
    drift_hold: int = field(default=1024, metadata={"range": (0, 10_000_000)})
    # samples its new level is estimated from
    drift_baseline: int = field(default=256, metadata={"range": (2, 10_000_000)})
    # labelled stream samples per label-rung round (0: no label rounds)
    label_every: int = field(default=64, metadata={"range": (0, 1_000_000)})
    # rounds waiting for the calibration thread; more: skip the oldest
    max_backlog: int = field(default=4, metadata={"range": (1, 60)})

    def schedule_config(self) -> ScheduleConfig:
        """The stream side's knobs (the fields of the same names)."""
        names = [f.name for f in dataclasses.fields(ScheduleConfig)]
        return ScheduleConfig(**{name: getattr(self, name) for name in names})

    def drift_config(self) -> DriftConfig:
        """The drift signal's knobs."""
        return DriftConfig(
            allowance=self.drift_allowance,
            threshold=self.drift_threshold,
            output_allowance=self.drift_output_allowance,
            hold=self.drift_hold,
            baseline=self.drift_baseline,
        )

    def buffer_config(self) -> BufferConfig:
        """The QCore buffer's bounds."""
        return BufferConfig(
            max_samples=self.buffer_samples,
            max_bytes=self.buffer_bytes,
            class_balance=self.class_balance,
            random=self.buffer_draw == "random",
        )
