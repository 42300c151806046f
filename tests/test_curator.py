"""Curator pieces on synthetic inputs: classes, folds, cleanlab flags, the filter_emotion rules, and the saved final
curator (save, load, classify new images); and the streamed inputs on the demo DAG's faces."""

import numpy as np
import pytest
import torch

from stages.lib.curator import (
    CuratorConfig,
    cross_fit,
    curator_inputs,
    curator_probs,
    face_inputs,
    final_seed,
    fold_of,
    judge_features,
    load_curator,
    predict,
    save_curator,
    train_net,
)
from stages.lib.errors import StageError
from stages.lib.label_issues import class_index, curator_classes, decide, find_issues, judge_to_classes


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
    labels = ["neutral", "happy", "sad", "neutral", "happy", "neutral"]
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.9, 0.0], [0.3, 0.4, 0.3], [0.2, 0.1, 0.7]]
    )
    issues = np.array([False, False, False, True, False, True])
    kept, reasons, conf = decide(labels, classes, probs, issues, "neutral", "happy", 0.5)
    # the last: labelled neutral, read as neither neutral nor happy
    assert reasons == ["", "", "other_emotion", "label_issue", "low_confidence", "label_other"]
    assert kept.tolist() == [True, True, False, False, False, False]


def test_label_other_keep_keeps_faces_read_as_neither_that_prefer_their_label():
    classes = ["neutral", "happy", "other"]
    labels = ["neutral", "neutral", "happy", "neutral"]
    # read as other: prefers neutral to happy / prefers happy to neutral / prefers happy; then a smiling "neutral"
    probs = np.array([[0.3, 0.1, 0.6], [0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.1, 0.8, 0.1]])
    issues = np.array([True, True, False, True])
    kept, reasons, _ = decide(labels, classes, probs, issues, "neutral", "happy", 0.5, label_other="keep")
    assert reasons == ["", "label_other", "", "label_issue"]
    _, rejected, _ = decide(labels, classes, probs, issues, "neutral", "happy", 0.5, label_other="reject")
    assert rejected == ["label_other", "label_other", "low_confidence", "label_issue"]


def test_judge_probs_fold_into_classes():
    fer = np.zeros((1, 7))
    fer[0, 3], fer[0, 6], fer[0, 4] = 0.5, 0.2, 0.3  # happy, neutral, sad
    out = judge_to_classes(fer, ["neutral", "happy", "other"])
    assert out[0].tolist() == pytest.approx([0.2, 0.5, 0.3])


# ---- the saved final curator --------------------------------------------------------------------------------------


def toy_faces(n=12, side=40, seed=0):
    """Grey images with a face box and a label map each; class 1 has a bright band where a smile would be."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = rng.integers(60, 120, (n, side, side)).astype(np.uint8)
    images[y == 1, 26:32, 10:30] = 230
    maps = rng.integers(0, 19, (n, side, side)).astype(np.uint8)
    boxes = [(4, 4, 32, 32)] * n
    return list(images), boxes, list(maps), y


@pytest.mark.parametrize("backbone,input_", [("scratch", "grey_masks"), ("judge", "grey_masks"), ("scratch", "grey")])
def test_saved_curator_gives_the_trained_nets_probabilities(tmp_path, backbone, input_):
    images, boxes, maps, y = toy_faces()
    use_maps = maps if input_ == "grey_masks" else None
    x = (
        judge_features(images, boxes, label_maps=use_maps)
        if backbone == "judge"
        else face_inputs(images, boxes, 16, use_maps)
    )
    cfg = CuratorConfig(epochs=2, batch=4)
    net = train_net(x, y, 2, cfg, "cpu", seed=final_seed(cfg))
    path = tmp_path / "curator" / "curator.pt"
    save_curator(
        str(path),
        net,
        dict(backbone=backbone, input=input_, size=16, classes=["neutral", "happy"], source="neutral", target="happy"),
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["curator.pt"]  # no temp file left behind
    save_curator(
        str(tmp_path / "again.pt"),
        net,
        dict(backbone=backbone, input=input_, size=16, classes=["neutral", "happy"], source="neutral", target="happy"),
    )
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()  # same net, same bytes: DVC sees no change
    torch.load(path, weights_only=True)  # plain types only
    curator = load_curator(str(path), "cpu")
    assert (curator.backbone, curator.input, curator.classes) == (backbone, input_, ["neutral", "happy"])
    # new images (the same faces, as evaluate passes them: whole images, RGB) get the in-memory net's probabilities
    rgb = [np.repeat(im[..., None], 3, axis=2) for im in images]
    probs = curator_probs(curator, rgb, boxes, maps)
    assert probs.shape == (len(images), 2)
    assert np.array_equal(probs, predict(net, x, "cpu"))


def test_final_seed_is_not_a_fold_seed():
    cfg = CuratorConfig(folds=5, seed=3)
    assert final_seed(cfg) not in {cfg.seed * 1000 + f for f in range(cfg.folds)}


def test_missing_or_damaged_curator_is_one_line(tmp_path):
    path = tmp_path / "models" / "curator" / "curator.pt"
    with pytest.raises(
        StageError,
        match=r"^curator model .*curator\.pt not found; train it with "
        r"`dvc repro train_curator`$",
    ):
        load_curator(str(path), "cpu")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(StageError, match="unreadable") as err:
        load_curator(str(path), "cpu")
    assert "\n" not in str(err.value) and "dvc repro train_curator" in str(err.value)


def test_a_grey_masks_curator_needs_label_maps(tmp_path):
    images, boxes, maps, y = toy_faces(n=4)
    net = train_net(face_inputs(images, boxes, 16, maps), y, 2, CuratorConfig(epochs=1, batch=4), "cpu", seed=0)
    save_curator(
        str(tmp_path / "c.pt"),
        net,
        dict(
            backbone="scratch",
            input="grey_masks",
            size=16,
            classes=["neutral", "happy"],
            source="neutral",
            target="happy",
        ),
    )
    with pytest.raises(StageError, match="grey_masks"):
        curator_probs(load_curator(str(tmp_path / "c.pt")), images, boxes)


def test_final_curator_never_sees_test_faces_so_shuffled_labels_fall_to_chance(tmp_path, monkeypatch):
    # Random features with random labels: a net can only memorise them. train_curator's final curator (the one
    # evaluate scores test faces and their composites with) is fitted on the train split alone, so on test rows
    # it guesses; fitted on every row, as it once was, it "knows" the test labels it memorised.
    from stages.lib.paths import CURATOR as MODEL
    from stages.train_curator import fit_final

    rng = np.random.default_rng(0)
    n, classes = 240, ["neutral", "happy", "other"]
    x = np.repeat(rng.normal(size=(n, 1, 32)).astype(np.float32), 2, axis=1)
    y = rng.integers(0, 3, n)
    is_test = np.arange(n) % 4 == 0
    cfg = CuratorConfig(epochs=60, batch=32, lr=0.01)
    p = dict(cfg=cfg, device="cpu", backbone="judge", input="grey", size=48, source="neutral", target="happy")
    monkeypatch.chdir(tmp_path)
    out = fit_final(x, y, is_test, classes, p)
    assert out["final_train_rows"] == 180 and out["final_test_rows"] == 60
    assert out["final_test_accuracy"] < 0.45  # chance is 1/3
    assert load_curator(MODEL, "cpu").classes == classes
    in_sample = train_net(x, y, 3, cfg, "cpu", seed=final_seed(cfg))
    assert (predict(in_sample, x[is_test], "cpu").argmax(1) == y[is_test]).mean() > 0.6


def test_streamed_inputs_follow_the_ids_order_and_name_a_missing_image(demo_project, monkeypatch):
    """curator_inputs writes each face's inputs at its id's place, whatever order the images table streams them in,
    and a kept id without image bytes is a one-line error, not a short array."""
    import pandas as pd

    from stages.lib.tables import kept_ids

    monkeypatch.chdir(demo_project)
    ids = kept_ids("data/filtered/filter_masks.parquet", "filter_masks")[:40]
    x, labels, splits = curator_inputs(ids, "scratch", True, 24, "cpu")
    x_rev, labels_rev, splits_rev = curator_inputs(ids[::-1], "scratch", True, 24, "cpu")
    assert x.shape == (40, 4, 24, 24) and np.array_equal(x_rev, x[::-1])
    assert labels_rev == labels[::-1] and splits_rev == splits[::-1]
    images = pd.read_parquet("data/images", columns=["id", "label", "split"]).set_index("id")
    assert labels == list(images.label[ids]) and splits == list(images.split[ids])
    with pytest.raises(StageError, match=r"lacks image bytes for 1 kept ids \(e\.g\. not-an-id\); rerun ingest"):
        curator_inputs(ids[:3] + ["not-an-id"], "scratch", False, 24, "cpu")
