"""The paired bootstrap behind every <metric>_ci."""

import numpy as np
import pytest

from stages.lib.intervals import bootstrap


def test_seeded_and_covers_the_truth():
    rng = np.random.default_rng(1)
    hits = rng.random(400) < 0.3
    stats = {"rate": lambda d: d["hit"].mean()}
    ci = bootstrap({"hit": hits}, stats, resamples=500, seed=0)["rate"]
    assert ci == bootstrap({"hit": hits}, stats, resamples=500, seed=0)["rate"]
    assert ci[0] < 0.3 < ci[1] and 0.05 < ci[1] - ci[0] < 0.12  # 2 * 1.96 * sqrt(.21 / 400) = 0.09


def test_pairing_narrows_a_gain_of_correlated_scores():
    # Each face's composite score is its original's plus a small edit: a paired gain is tight, an unpaired
    # difference of the two means would carry both faces' spread.
    rng = np.random.default_rng(2)
    orig = rng.normal(0, 1, 200)
    comp = orig + 0.1 + rng.normal(0, 0.05, 200)
    paired = bootstrap({"o": orig, "c": comp}, {"gain": lambda d: (d["c"] - d["o"]).mean()}, 500)["gain"]
    assert paired[0] < 0.1 < paired[1] and paired[1] - paired[0] < 0.03


def test_nan_faces_are_left_out_and_empty_input_gives_none():
    values = np.array([1.0, np.nan, 0.0, 1.0])
    ci = bootstrap(
        {"v": values}, {"m": lambda d: np.nanmean(d["v"]) if np.isfinite(d["v"]).any() else np.nan}, resamples=200
    )["m"]
    assert 0.0 <= ci[0] <= ci[1] <= 1.0
    assert bootstrap({"v": []}, {"m": lambda d: 0.0})["m"] is None
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap({"a": [1, 2], "b": [1]}, {"m": lambda d: 0.0})
