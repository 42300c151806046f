"""filter_masks, train_curator and filter_emotion run for real on the demo (the session's demo DAG,
tests/helpers/demo_dag.py), scored against the generator's ground truth (data/demo_truth.parquet, read here only)."""

import json

import numpy as np
import pandas as pd
import pytest

from stages.lib.codec import decode_image, decode_png, to_grey
from stages.lib.curator import curator_probs, load_curator
from stages.lib.tables import load_faces
from tests.helpers.demo_dag import DEMO
from tests.helpers.stage_runner import assert_contract, run_stage, scratch_project


@pytest.fixture(scope="module")
def demo(demo_project):
    return demo_project


def table(project, name):
    return pd.read_parquet(project / "data" / "filtered" / f"{name}.parquet")


def test_every_row_is_kept_or_rejected_with_a_reason(demo, shared_data):
    parsed = pd.concat(pd.read_parquet(f) for f in sorted((demo / "data" / "parsed").glob("*.parquet")))
    fm, fe, oof = table(demo, "filter_masks"), table(demo, "filter_emotion"), table(demo, "curator_oof")
    assert set(fm.id) == set(parsed.id) and len(fm) == len(parsed)
    assert set(fe.id) == set(fm.id[fm.kept]) and len(fe) == fm.kept.sum()
    assert set(oof.id) == set(fm.id[fm.kept])
    for t in (fm, fe):
        assert (t.reason[~t.kept] != "").all() and (t.reason[t.kept] == "").all()
    metrics = json.loads((demo / "metrics" / "filter_masks.json").read_text())
    assert metrics["kept"] + metrics["rejected"] == metrics["input"] == len(fm)
    fem = json.loads((demo / "metrics" / "filter_emotion.json").read_text())
    assert fem["kept"] + sum(fem["by_reason"].values()) == fem["input"] == len(fe)
    assert_contract(demo, shared_data)
    assert (demo / "plots" / "filter_masks" / "no_face.png").is_file()
    confusion = (demo / "plots" / "confusion" / "filter_emotion.csv").read_text().splitlines()
    assert confusion[0] == '"id","given","predicted"' and len(confusion) == 1 + fem["input"]
    assert (demo / "plots" / "filter_emotion" / "label_issue.png").is_file()


def test_injected_label_noise_is_found(demo):
    truth = pd.read_parquet(demo / "data" / "demo_truth.parquet")
    fe = table(demo, "filter_emotion").merge(truth[["id", "label_noise"]], on="id")
    flagged, noisy = fe.reason == "label_issue", fe.label_noise.astype(bool)
    assert noisy.sum() >= 10
    precision = (flagged & noisy).sum() / max(flagged.sum(), 1)
    recall = (flagged & noisy).sum() / noisy.sum()
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)


def test_faceless_and_tiny_faces_are_removed_by_filter_masks(demo):
    truth = pd.read_parquet(demo / "data" / "demo_truth.parquet")
    fm = table(demo, "filter_masks").merge(truth[["id", "defect"]], on="id")
    assert not fm.kept[fm.defect.isin(["non_face", "too_small"])].any()
    assert fm.kept[fm.defect == "none"].mean() > 0.95


def test_occluded_and_closed_eye_faces_are_removed_by_filter_masks(demo):
    truth = pd.read_parquet(demo / "data" / "demo_truth.parquet")
    fm = table(demo, "filter_masks").merge(truth[["id", "defect"]], on="id")
    hidden = fm.defect.isin(["mouth_occluded", "eyes_occluded", "sunglasses", "eyes_closed"])
    assert hidden.sum() >= 10 and not fm.kept[hidden].any()


def test_the_final_curator_classifies_faces_like_the_cross_fit(demo, monkeypatch):
    """train_curator saves a net fitted on every row; read back, it agrees with the out-of-fold predictions on the
    faces it learned from (it has seen their labels, so this checks the file, not generalisation)."""
    path = demo / "models" / "curator" / "curator.pt"
    assert path.is_file() and not path.parent.is_symlink()  # the scratch project's own, not the repository's
    curator = load_curator(str(path), "cpu")
    oof = table(demo, "curator_oof")
    assert curator.classes == list(oof.classes.iloc[0]) and (curator.source, curator.target) == ("neutral", "happy")
    ids = sorted(oof.id)[:60]
    monkeypatch.chdir(demo)
    faces = [load_faces(ids, ["image"], ["face_bbox", "label_map"])[i] for i in ids]
    greys = [to_grey(decode_image(f["image"])) for f in faces]
    bboxes, maps = [f["face_bbox"] for f in faces], [decode_png(f["label_map"]) for f in faces]
    predicted = np.asarray(curator.classes)[curator_probs(curator, greys, bboxes, maps).argmax(axis=1)]
    assert (predicted == oof.set_index("id").loc[ids, "predicted"].to_numpy()).mean() >= 0.9


def test_rerun_is_byte_identical_and_bad_params_are_one_line(demo, tmp_path):
    before = {n: (demo / "data" / "filtered" / f"{n}.parquet").read_bytes() for n in ("filter_masks", "filter_emotion")}
    for stage in ("filter_masks", "filter_emotion"):
        run_stage(demo, stage)
    for name, data in before.items():
        assert (demo / "data" / "filtered" / f"{name}.parquet").read_bytes() == data, name
    bad = scratch_project(tmp_path / "bad", dict(DEMO, filter_emotion={"classifier": "oracle"}))
    (bad / "data").symlink_to(demo / "data")
    proc = run_stage(bad, "filter_emotion", check=False)
    assert proc.returncode == 2 and "filter_emotion.classifier" in proc.stderr
    assert "Traceback" not in proc.stderr
