"""Curator pieces that need no images: classes, folds, cleanlab flags, the filter_emotion rules."""
import numpy as np
import pytest

from stages.filter_emotion import decide, judge_to_classes
from stages.lib.curator import CuratorConfig, class_index, cross_fit, curator_classes, find_issues, fold_of


def test_classes_merge_other_emotions():
    assert curator_classes("neutral", "happy", ["happy", "neutral"]) == ["neutral", "happy"]
    classes = curator_classes("neutral", "happy", ["happy", "sad", "neutral"])
    assert classes == ["neutral", "happy", "other"]
    assert class_index(["sad", "happy", "neutral", "fear"], classes).tolist() == [2, 1, 0, 2]


def test_folds_are_stratified_and_seeded():
    y = np.array([0] * 20 + [1] * 10 + [2] * 5)
    a, b = fold_of(y, 5, seed=1), fold_of(y, 5, seed=1)
    assert (a == b).all() and set(a) == set(range(5))
    assert all(((a == f) & (y == 2)).sum() == 1 for f in range(5))


def test_cleanlab_flags_swapped_labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    probs = np.where(y_true[:, None] == np.arange(2), 0.9, 0.1) + rng.uniform(0, 0.05, (200, 2))
    probs /= probs.sum(1, keepdims=True)
    y = y_true.copy()
    swapped = rng.choice(200, 15, replace=False)
    y[swapped] = 1 - y[swapped]
    issues = find_issues(y, probs)
    assert set(np.flatnonzero(issues)) == set(swapped)


def test_cross_fit_learns_a_separable_toy_task():
    # feature-head inputs (N, 2 views, F): class 1 has a shifted mean
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40)
    x = rng.normal(0, 1, (80, 2, 8)).astype(np.float32) + 2.0 * y[:, None, None]
    probs, folds = cross_fit(x, y, 2, CuratorConfig(folds=4, epochs=20, batch=16, lr=0.01))
    assert probs.shape == (80, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == y).mean() > 0.9
    again, _ = cross_fit(x, y, 2, CuratorConfig(folds=4, epochs=20, batch=16, lr=0.01))
    assert np.array_equal(probs, again)


def test_decide_rules_in_order():
    classes = ["neutral", "happy", "other"]
    labels = ["neutral", "happy", "sad", "neutral", "happy"]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.9, 0.0], [0.3, 0.4, 0.3]])
    issues = np.array([False, False, False, True, False])
    kept, reasons, conf = decide(labels, classes, probs, issues, "neutral", "happy", 0.5)
    assert reasons == ["", "", "other_emotion", "label_issue", "low_confidence"]
    assert kept.tolist() == [True, True, False, False, False]


def test_judge_probs_fold_into_classes():
    fer = np.zeros((1, 7))
    fer[0, 3], fer[0, 6], fer[0, 4] = 0.5, 0.2, 0.3  # happy, neutral, sad
    out = judge_to_classes(fer, ["neutral", "happy", "other"])
    assert out[0].tolist() == pytest.approx([0.2, 0.5, 0.3])
