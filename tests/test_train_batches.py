"""Training batches: a training split whose size leaves one sample over a whole number of
batches trains (that lone sample joins the batch before it: BatchNorm cannot train on a
batch of one where the network has pooled short windows down to one step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_agent.data.datasets import Dataset
from edge_agent.training.arch import default_spec
from edge_agent.training.fit import TrainConfig, _batches, fit


@pytest.mark.parametrize("n", [5, 32, 33, 64, 65, 97, 100])
def test_every_epoch_covers_every_sample_in_batches_of_two_or_more(n: int) -> None:
    gen = torch.Generator().manual_seed(0)
    per_epoch = -(-n // 32) - (n > 32 and n % 32 == 1)  # the lone sample joins a batch
    batches = list(_batches(n, 32, 3 * per_epoch, gen))
    assert len(batches) == 3 * per_epoch
    for e in range(3):
        epoch = torch.cat(batches[e * per_epoch : (e + 1) * per_epoch])
        assert sorted(epoch.tolist()) == list(range(n))
    assert min(len(b) for b in batches) >= min(n, 2)
    assert max(len(b) for b in batches) <= 33


def test_short_windows_train_when_one_sample_is_left_over() -> None:
    rng = np.random.default_rng(0)
    n = 65  # 2 x 32 + 1; windows of 7 steps are pooled to 1 step before the last BatchNorm
    X = rng.standard_normal((n, 3, 7)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    ds = Dataset("short", X, y, X[:10], y[:10], ["a", "b"])
    cfg = TrainConfig(fp_steps=6, qat_steps=3, progress=False)
    _, qnets, metrics = fit(ds, default_spec(ds.input_shape, 2), [4], 0, cfg)
    assert set(qnets) == {4} and 0.0 <= metrics["q4_test_accuracy"] <= 1.0
