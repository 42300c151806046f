"""`ingest.source: image_folder` (no labels: the judge's pseudo-labels) on real photos, and filter_emotion's rule for
unsure pseudo-labels (pseudo_low_confidence)."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.lib.boxes import face_box, face_crop
from stages.lib.codec import decode_image, to_grey
from stages.lib.judge import judge_probs, load_judge
from stages.lib.label_issues import REASONS, pseudo_rule
from stages.lib.labels import FER_ORDER, canonical_emotion
from tests.helpers.stage_runner import assert_contract, run_stage, scratch_project


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shared_data):
    """Eight real photos (three labelled neutral, three happy, two else; the labels are not copied), one of them again
    in a subfolder, a corrupt file, a link out of the folder and a text file."""
    photos = shared_data / "facial_expressions" / "images"
    legend = pd.read_csv(shared_data / "facial_expressions" / "legend.csv").sort_values("image")
    legend["label"] = legend.emotion.map(canonical_emotion)
    picks = [*legend[legend.label == "neutral"].image[:3], *legend[legend.label == "happy"].image[:3]]
    picks += list(legend[~legend.label.isin(["neutral", "happy"])].image[:2])
    root = tmp_path_factory.mktemp("unlabelled")
    folder, outside = root / "faces", root / "outside"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    for name in picks:
        shutil.copy(photos / name, folder / name)
    shutil.copy(photos / picks[0], folder / "sub" / "again.jpg")
    shutil.copy(photos / picks[1], outside / "private.jpg")
    (folder / "escape.jpg").symlink_to(outside / "private.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all\n")
    (folder / "notes.txt").write_text("not an image: not a row\n")
    return folder, picks


@pytest.fixture(scope="module")
def project(tmp_path_factory, folder):
    project = scratch_project(
        tmp_path_factory.mktemp("p"), {"ingest": {"source": "image_folder", "path": str(folder[0]), "device": "cpu"}}
    )
    run_stage(project, "ingest")
    return project


def images(project):
    return pd.read_parquet(project / "data" / "images").set_index("source_key")


def test_every_image_is_pseudo_labelled_or_rejected(project, folder, shared_data):
    root, picks = folder
    df = images(project)
    expected = {**dict.fromkeys(picks, ""), "sub/again.jpg": "duplicate", "escape.jpg": "outside_root"}
    assert df.reason.to_dict() == {**expected, "broken.jpg": "corrupt_image"}
    assert (df.label_source == "judge").all()
    kept = df[df.kept]
    assert set(kept.label) <= set(FER_ORDER) and kept.label_prob.between(1 / len(FER_ORDER), 1).all()
    # the judge's own top class and probability on the whole image, computed here independently of ingest
    greys = [to_grey(decode_image((root / name).read_bytes())) for name in kept.index]
    probs = judge_probs(load_judge(), [face_crop(g, face_box(g, None)) for g in greys])
    assert kept.label.tolist() == [FER_ORDER[k] for k in probs.argmax(axis=1)]
    np.testing.assert_allclose(kept.label_prob, probs.max(axis=1), atol=1e-6)
    assert df.label["sub/again.jpg"] == df.label[picks[0]]  # a copy is labelled as the image it repeats
    assert df.loc[["broken.jpg", "escape.jpg"], "label"].isna().all()
    assert df.loc[["broken.jpg", "escape.jpg"], "label_prob"].isna().all()
    assert_contract(project, shared_data)


def test_a_rerun_writes_the_same_bytes(project):
    shards = sorted((project / "data" / "images").glob("*.parquet"))
    first = [p.read_bytes() for p in shards]
    run_stage(project, "ingest")
    assert [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))] == first


def test_filter_emotion_rejects_unsure_pseudo_labels(project):
    """The real stage on the pseudo-labelled photos (classifier=judge, so no curator to train), with the threshold
    put between the probabilities of the neutral and happy pseudo-labels so that the rule splits them."""
    run_stage(project, "parse")
    df = images(project)
    kept = df[df.kept].reset_index().set_index("id")
    ids = sorted(kept.index)
    (project / "data" / "filtered").mkdir(exist_ok=True)
    pq.write_table(
        pa.table({"id": ids, "kept": [True] * len(ids), "reason": [""] * len(ids)}),
        project / "data" / "filtered" / "filter_masks.parquet",
    )
    ours = np.sort(kept.label_prob[kept.label.isin(["neutral", "happy"])].to_numpy())
    assert len(ours) >= 2 and ours[0] < ours[-1], "the judge read too few of the photos as neutral or happy"
    threshold = float((ours[len(ours) // 2 - 1] + ours[len(ours) // 2]) / 2)
    scratch_project(project, {"filter_emotion": {"classifier": "judge", "min_pseudo_confidence": threshold}})
    run_stage(project, "filter_emotion")
    fe = pd.read_parquet(project / "data" / "filtered" / "filter_emotion.parquet").set_index("id")
    assert fe.label_source.eq("judge").all()
    np.testing.assert_allclose(fe.label_prob, kept.label_prob[fe.index], atol=0)
    st = fe.label.isin(["neutral", "happy"])
    assert (fe.reason[~st] == "other_emotion").all()
    assert (fe.reason[st & (fe.label_prob < threshold)] == "pseudo_low_confidence").all()
    assert (fe.reason[st & (fe.label_prob >= threshold)] != "pseudo_low_confidence").all()
    assert 0 < (fe.reason == "pseudo_low_confidence").sum() < st.sum()
    metrics = json.loads((project / "metrics" / "filter_emotion.json").read_text())
    assert metrics["by_reason"]["pseudo_low_confidence"] == (fe.reason == "pseudo_low_confidence").sum()


def test_the_pseudo_rule_overrides_only_unsure_judge_labels_of_source_or_target():
    labels = ["neutral", "happy", "sad", "neutral", "happy", "neutral", "happy"]
    reasons = ["", "label_issue", "other_emotion", "", "", "low_confidence", ""]
    sources = ["judge", "judge", "judge", "given", "judge", "judge", "judge"]
    probs = [0.59, 0.2, 0.1, None, 0.6, 0.3, None]
    kept, out = pseudo_rule(reasons, labels, sources, probs, "neutral", "happy", 0.6)
    assert out == [
        "pseudo_low_confidence",  # below the bar
        "pseudo_low_confidence",  # before the classifier's verdict
        "other_emotion",  # neither source nor target: unchanged
        "",  # a given label
        "",  # exactly at the bar
        "pseudo_low_confidence",
        "pseudo_low_confidence",  # a judge row without a probability is not trusted
    ]
    assert kept.tolist() == [r == "" for r in out] and set(out) - {""} <= set(REASONS)


def test_a_bad_min_pseudo_confidence_is_one_line(tmp_path):
    project = scratch_project(tmp_path / "p", {"filter_emotion": {"min_pseudo_confidence": 1.5}})
    proc = run_stage(project, "filter_emotion", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "filter_emotion.min_pseudo_confidence" in lines[0]
