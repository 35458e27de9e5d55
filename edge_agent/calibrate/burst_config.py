"""Hyper-parameters of a QAT burst (no torch: the agent builds and sends them)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.calibrate.res import coreset_size

SELECTIONS = ("combined", "res", "random", "all")
CLC_MODES = ("none", "independent", "cascaded")


@dataclass(frozen=True)
class BurstConfig:
    """Hyper-parameters of one burst (JSON-serializable; the runner passes it as a file)."""

    bits: int | None = None  # bit-width to train; None: the bundle's default
    steps: int = 480  # about 13 s of CPU at 5% of a 500-sample pool (bench/qat_burst_select)
    batch_size: int = 32
    lr: float = 5e-3  # weights and biases (bench/qat_burst_select)
    quantizer_lr: float = 5e-4  # LSQ+ scales and offsets
    coreset_fraction: float = 0.05
    selection: str = "res"  # combined (d(t), docs/method.md sec. 8), res (RES alone), random, all
    reselect_every: int = 10
    score_temperature: float = 1.0  # softmax temperature of RES (bench/qat_burst_select)
    normalize_scores: bool = True
    balanced: bool = True  # class-balanced top-S (labels, else FP predictions)
    random_share: float = 0.5  # share drawn at random (0: pure top-S; bench/qat_burst_select)
    kd_weight: float = 1.0
    kd_temperature: float = 4.0
    ce_weight: float = 1.0
    clc: str = "cascaded"  # none, independent, cascaded
    clc_beta: float = 10.0  # bench/qat_burst_select
    clc_temperature: float = 1.0
    cr_weight: float = 0.0  # lambda_max of consistency regularization; 0 turns CR off
    cr_momentum: float = 0.99
    cr_ramp_steps: int = 40
    cr_temperature: float = 1.0
    augment_strength: float = 1.0  # 0 turns training augmentation off
    seed: int = 0

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.clc not in CLC_MODES:
            raise ValueError(f"clc must be one of {CLC_MODES}, got {self.clc!r}")
        if self.steps < 1 or self.batch_size < 1 or self.reselect_every < 1:
            raise ValueError("steps, batch_size and reselect_every must be positive")
        coreset_size(1, self.coreset_fraction)  # validates the fraction
        if not 0.0 <= self.random_share <= 1.0:
            raise ValueError(f"random_share must be in [0, 1], got {self.random_share}")
