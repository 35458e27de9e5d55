"""The real-drift benchmark's bookkeeping: no sample both labelled in the stream and
scored, and the recovery arithmetic (bench/real_drift*.py; tiny synthetic data, no
training)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.real_drift_data import check_disjoint, make_split, stream_items
from bench.real_drift_report import group, recovery, summarize


def _split(groups: bool = False):
    rng = np.random.default_rng(0)
    n = 120
    X = rng.standard_normal((n, 2, 16)).astype(np.float32)
    rec = np.arange(n) // 4  # 4 windows per "recording", one class each
    y = rec % 3 if groups else np.arange(n) % 3
    in_train = np.arange(n) < 60
    return make_split("synthetic", X, y, ["a", "b", "c"], in_train, 1, {}, rec if groups else None)


@pytest.mark.parametrize("groups", [False, True])
def test_parts_are_disjoint_and_domains_kept(groups: bool) -> None:
    s = _split(groups)
    parts = [s.fit, s.clean, s.stream, s.held]
    every = np.concatenate(parts)
    assert len(every) == len(np.unique(every)) == len(s.y)
    assert set(s.fit) | set(s.clean) == set(range(60))  # train domain only
    assert set(s.stream) | set(s.held) == set(range(60, 120))  # drifted domain only
    assert set(s.clean_a).isdisjoint(s.clean_b)
    if groups:  # a recording's windows never sit on both sides of a cut
        rec = np.arange(120) // 4
        assert set(rec[s.stream]).isdisjoint(rec[s.held])
        assert set(rec[s.fit]).isdisjoint(rec[s.clean])


def test_recording_with_two_classes_is_refused() -> None:
    X = np.zeros((8, 1, 4), np.float32)
    with pytest.raises(ValueError, match="more than one class"):
        make_split(
            "bad", X, np.arange(8) % 2, ["a", "b"], np.arange(8) < 4, 0, {}, np.arange(8) // 4
        )


def test_streamed_labels_are_never_scored() -> None:
    s = _split()
    data = stream_items(s.X, s.y, s.stream, 0.2, np.random.default_rng(3), items=200)
    assert set(data.ids) <= set(s.stream)
    # the streamed samples and labels are the stream part's own rows (not X[0:n])
    np.testing.assert_array_equal(data.X, s.X[data.ids])
    np.testing.assert_array_equal(data.y, s.y[data.ids])
    labelled = set(data.ids[data.labelled])
    assert len(labelled) == round(0.2 * len(s.stream))
    # a labelled sample carries its label every time it comes by, others never do
    for i, lab in zip(data.ids, data.labelled, strict=True):
        assert lab == (i in labelled)
    check_disjoint(data.ids, s.held)  # what the benchmark scores after calibration
    check_disjoint(data.ids, s.clean)
    with pytest.raises(ValueError, match="1 scored sample"):
        check_disjoint(data.ids, np.append(s.held, sorted(labelled)[0]))


def test_recovery_arithmetic() -> None:
    assert recovery(0.90, 0.50, 0.70) == pytest.approx(0.5)
    assert recovery(0.90, 0.50, 0.90) == pytest.approx(1.0)
    assert recovery(0.90, 0.50, 0.40) == pytest.approx(-0.25)
    assert recovery(0.90, 0.86, 0.90) is None  # a drift that cost < 5 points


def _case(
    seed: int, before: float, right: float, after: float, clean_after: float, kind: str = "real"
) -> dict:
    row = {
        "before": before,
        "right_after": right,
        "after": after,
        "clean_after": clean_after,
        "cpu_s": 1.0,
        "rounds": 4,
        "kept": 1,
        "cpu_per_round_s": 0.25,
    }
    none = {**row, "after": right, "clean_after": before, "cpu_s": 0.0, "rounds": 0, "kept": 0}
    return {
        "set": "s",
        "seed": seed,
        "bits": 4,
        "kind": kind,
        "drift": "real",
        "label_fraction": 0.2,
        "methods": {"none": none, "default": row},
    }


def test_recovery_is_taken_over_seed_means() -> None:
    # seed means: before 0.85, right after 0.45, after 0.65 -> (0.65-0.45)/(0.85-0.45)
    cases = [_case(0, 0.9, 0.5, 0.7, 0.88), _case(1, 0.8, 0.4, 0.6, 0.80)]
    g = group(cases, "real")
    assert g[("s", 4, "real", 0.2)]["default"]["recovery"] == pytest.approx(0.5)
    keys = summarize(cases)["keys"]
    assert keys["mean_recovery_4bit"] == pytest.approx(0.5)
    assert keys["min_recovery_4bit"] == pytest.approx(0.5)
    assert keys["max_forgetting_pts"] == pytest.approx(100 * (0.85 - 0.84))


def test_a_set_whose_labels_were_renamed_is_reported_apart() -> None:
    """``seattle_weather``'s clean part keeps the names its drift changed: what the agent
    loses there is its own key, not ``max_forgetting_pts``; its injected kinds count."""
    renamed = {**_case(0, 0.9, 0.5, 0.7, 0.6), "set": "seattle_weather"}
    injected = {**_case(0, 0.9, 0.5, 0.7, 0.85, "injected"), "set": "seattle_weather"}
    keys = summarize([_case(0, 0.9, 0.5, 0.7, 0.88), renamed, injected])["keys"]
    assert keys["max_forgetting_pts"] == pytest.approx(5.0)
    assert keys["forgetting_renamed_labels_pts"] == pytest.approx(30.0)


def test_no_drift_keys() -> None:
    cases = [_case(0, 0.9, 0.9, 0.88, 0.88, "no_drift"), _case(1, 0.8, 0.8, 0.8, 0.8, "no_drift")]
    keys = summarize(cases)["keys"]
    assert keys["no_drift_accuracy_drop_pts"] == pytest.approx(1.0)  # (2 + 0) / 2 points
    assert keys["no_drift_kept_fraction"] == pytest.approx(2 / 8)


def test_cpu_ratio_leaves_out_cases_where_the_flips_gained_nothing() -> None:
    gained, flat = _case(0, 0.9, 0.5, 0.7, 0.88), _case(1, 0.9, 0.5, 0.5, 0.88)
    gained["methods"]["numpy_backprop"] = {**gained["methods"]["none"], "cpu_s_to_match_flips": 2.0}
    # nothing to reach: the uncalibrated model already has the flips' accuracy
    flat["methods"]["numpy_backprop"] = {**flat["methods"]["none"], "flips_no_gain": True}
    keys = summarize([gained, flat])["keys"]
    assert keys["cpu_ratio_vs_torchfree_backprop"] == pytest.approx(2.0 / 0.25)
    assert keys["cpu_ratio_vs_torchfree_backprop_whole_stream"] == pytest.approx(2.0 / 1.0)
    assert keys["cpu_ratio_cases"] == 1 and keys["cpu_ratio_cases_flips_no_gain"] == 1
