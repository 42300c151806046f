"""extract_rois end to end on small tables built from the real CelebA-HQ photos and their BiSeNet maps."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from stages.lib.codec import content_id, decode_png, encode_png
from stages.lib.rois import box_leaves_image, crop_roi, paste_roi, roi_alpha, roi_box
from stages.lib.tables import write_table_atomic
from tests.conftest import ROOT
from tests.helpers.stage_runner import run_stage, scratch_project
from tests.test_rois import PHOTOS, load_reference

SIDE = 160
ROIS = ["eyes", "mouth", "face"]


def build_inputs(project, shared_data):
    """images / parsed / filter_emotion tables for the 9 photos plus two edge cases.

    - 1321 has glasses over the eyes: eyes is a reject, mouth and face are kept.
    - 1333 is also given shifted so that its face runs off the left and top edges (the crop must be padded).
    - 2116 is kept by the filter but has no parse row; 2125 was rejected by the filter (must not appear).
    - one image is grey; labels alternate neutral/happy, splits alternate train/test.
    """
    faces = []
    for i, name in enumerate(PHOTOS):
        image, labels = load_reference(shared_data, name, SIDE)
        if name == "1112":
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        faces.append((name, image, labels, ["neutral", "happy"][i % 2], ["train", "test"][(i // 2) % 2]))
    image, labels = load_reference(shared_data, "1333", SIDE)
    faces.append(("1333_shifted", image[50:, 45:].copy(), labels[50:, 45:].copy(), "happy", "test"))
    images, parsed, filt, truth = [], [], [], {}
    for name, image, labels, label, split in faces:
        png = encode_png(image)
        image_id = content_id(png)
        truth[image_id] = dict(name=name, image=image, labels=labels, label=label, split=split)
        images.append(
            dict(
                id=image_id,
                source="test",
                source_key=name,
                split=split,
                label=label,
                width=image.shape[1],
                height=image.shape[0],
                channels=1 if image.ndim == 2 else 3,
                image=png,
                image_format="png",
                kept=True,
                reason="",
            )
        )
        if name != "2116":
            parsed.append(
                dict(
                    id=image_id,
                    backend="reference",
                    parse_size=SIDE,
                    face_found=True,
                    face_bbox=[0, 0, SIDE, SIDE],
                    label_map=encode_png(labels),
                    class_counts=np.bincount(labels.ravel(), minlength=19).tolist(),
                )
            )
        filt.append(dict(id=image_id, kept=name != "2125", reason="" if name != "2125" else "label_issue"))
    write_table_atomic(pa.Table.from_pylist(images), str(project / "data/images/part-00000.parquet"))
    write_table_atomic(pa.Table.from_pylist(parsed), str(project / "data/parsed/part-00000.parquet"))
    write_table_atomic(pa.Table.from_pylist(filt), str(project / "data/filtered/filter_emotion.parquet"))
    return truth


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    # the params the assertions below rely on, stated here so tuning params.yaml can't break the test
    project = scratch_project(
        tmp_path_factory.mktemp("extract_rois"),
        {
            "emotions": {"source": "neutral", "target": "happy"},
            "rois": {"names": ROIS, "side": {"eyes": 64, "mouth": 64, "face": 128}},
            "extract_rois": {
                "margin": {"eyes": 0.25, "mouth": 0.35, "face": 0.15},
                "feather": 0.15,
                "grow": {"eyes": 0.0, "mouth": 0.4, "face": 0.0},
                "sheet_per_domain": 4,
            },
        },
    )
    truth = build_inputs(project, shared_data)
    first = run_stage(project, "extract_rois")
    manifests = {r: pd.read_parquet(project / "data/rois" / f"{r}.parquet") for r in ROIS}
    return project, truth, first, manifests


def by_name(truth, name):
    return next(i for i, t in truth.items() if t["name"] == name)


def test_every_kept_id_is_a_row_per_roi(run):
    _, truth, _, manifests = run
    kept = {i for i, t in truth.items() if t["name"] != "2125"}
    for roi, df in manifests.items():
        assert set(df.id) == kept and len(df) == len(kept), roi
        assert (df.roi == roi).all()
        assert (df[~df.kept].reason != "").all() and (df[df.kept].reason == "").all()
        for col in ["bbox", "scale", "crop", "alpha", "padded"]:
            assert df[~df.kept][col].isna().all()
        lost = df[df.id == by_name(truth, "2116")].iloc[0]
        assert not lost.kept and lost.reason == "missing_parse"


def test_reasons_for_faces_whose_roi_cannot_be_formed(run):
    _, truth, _, manifests = run
    glasses = by_name(truth, "1321")
    eyes = manifests["eyes"].set_index("id")
    assert eyes.loc[glasses, "reason"] == "empty_eyes_region" and not eyes.loc[glasses, "kept"]
    assert manifests["mouth"].set_index("id").loc[glasses, "kept"]
    assert manifests["face"].set_index("id").loc[glasses, "kept"]


def test_rows_carry_split_domain_and_the_geometry_of_the_library(run):
    _, truth, _, manifests = run
    sizes = {"eyes": 64, "mouth": 64, "face": 128}
    margins = {"eyes": 0.25, "mouth": 0.35, "face": 0.15}
    grows = {"eyes": 0.0, "mouth": 0.4, "face": 0.0}
    for roi, df in manifests.items():
        for row in df[df.kept].itertuples():
            t = truth[row.id]
            assert row.split == t["split"] and row.domain == {"neutral": "A", "happy": "B"}[t["label"]]
            box = tuple(int(v) for v in row.bbox)
            assert box == roi_box(t["labels"], roi, margins[roi], grows[roi]) and box[2] == box[3]
            assert row.scale == pytest.approx(sizes[roi] / box[2], abs=1e-6)
            assert row.padded == box_leaves_image(box, t["labels"].shape)
            crop, alpha = decode_png(row.crop), decode_png(row.alpha)
            assert crop.shape == (sizes[roi], sizes[roi], 3) and alpha.shape == (sizes[roi], sizes[roi])
            rgb = t["image"] if t["image"].ndim == 3 else np.repeat(t["image"][..., None], 3, axis=2)
            assert np.array_equal(crop, crop_roi(rgb, box, sizes[roi]))
            assert np.array_equal(alpha, roi_alpha(t["labels"], roi, box, sizes[roi], 0.15, grows[roi]))
            assert alpha.max() == 255 and alpha.min() == 0


def test_off_edge_face_is_padded_and_pastes_back(run):
    _, truth, _, manifests = run
    shifted = by_name(truth, "1333_shifted")
    row = manifests["face"].set_index("id").loc[shifted]
    assert row.kept and row.padded and min(row.bbox[:2]) < 0
    t = truth[shifted]
    box = tuple(int(v) for v in row.bbox)
    alpha = decode_png(row.alpha)
    out = paste_roi(t["image"], decode_png(row.crop), box, alpha)
    back = cv2.resize(alpha, box[2:], interpolation=cv2.INTER_LINEAR)
    x, y, w, h = box
    untouched = np.ones(t["image"].shape[:2], bool)
    untouched[max(y, 0) : y + h, max(x, 0) : x + w] = (
        back[-min(y, 0) :, -min(x, 0) :][: t["image"].shape[0] - max(y, 0), : t["image"].shape[1] - max(x, 0)] == 0
    )
    assert np.array_equal(out[untouched], t["image"][untouched])
    assert np.abs(out.astype(int) - t["image"].astype(int)).mean() < 3


def test_metrics_count_domains_by_split(run):
    project, truth, _, manifests = run
    metrics = json.loads((project / "metrics/extract_rois.json").read_text())
    assert metrics["input"] == len(manifests["eyes"])
    for roi, df in manifests.items():
        m = metrics["rois"][roi]
        kept = df[df.kept]
        assert m["kept"] == len(kept) and m["rejected"] == len(df) - len(kept)
        for d in "AB":
            for s in ("train", "test"):
                assert m["counts"][d][s] == int(((kept.domain == d) & (kept.split == s)).sum())
        assert m["padded"] == int(kept.padded.sum())
        assert sum(m["by_reason"].values()) == m["rejected"]
    assert metrics["rois"]["eyes"]["by_reason"] == {"empty_eyes_region": 1, "missing_parse": 1}
    assert metrics["rois"]["face"]["padded"] >= 1


def test_contact_sheets_show_original_crop_alpha(run):
    project, _, _, manifests = run
    for roi in ROIS:
        sheet = cv2.cvtColor(cv2.imread(str(project / "plots/extract_rois" / f"{roi}.png")), cv2.COLOR_BGR2RGB)
        kept = manifests[roi][manifests[roi].kept]
        faces = sum(min(4, int((kept.domain == d).sum())) for d in "AB")
        # 3 columns (original | crop | alpha), one row of cells (thumb + caption + padding) per face
        assert sheet.shape[:2] == (faces * (128 + 12 + 4), 3 * (128 + 4))
        # the first face is domain A: its box is drawn in orange on the original
        first = sheet[2:130, 2:130].reshape(-1, 3).astype(int)
        assert (np.abs(first - [255, 60, 0]).sum(axis=1) < 30).sum() > 100


def test_rerun_is_byte_identical_and_keeps_the_contract(run):
    project, _, _, _ = run
    before = {r: (project / "data/rois" / f"{r}.parquet").read_bytes() for r in ROIS}
    sheet = (project / "plots/extract_rois/eyes.png").read_bytes()
    run_stage(project, "extract_rois")
    assert all((project / "data/rois" / f"{r}.parquet").read_bytes() == before[r] for r in ROIS)
    assert (project / "plots/extract_rois/eyes.png").read_bytes() == sheet
    check = ROOT.parent / "shared" / "tools" / "check_contract.py"
    proc = subprocess.run([sys.executable, str(check), "data"], cwd=project, capture_output=True, text=True)
    # our inputs break the parse contract on purpose (2116 has no parse row); the ROI manifests must not
    breaches = [line for line in proc.stdout.splitlines() if line.startswith("BREACH")]
    assert breaches == ["BREACH parsed: 1 ids of kept images missing, 0 unexpected"], proc.stdout + proc.stderr
    assert "rois/eyes.parquet 9; rois/face.parquet 9; rois/mouth.parquet 9" in proc.stdout


def test_bad_params_and_missing_inputs_are_one_line_errors(tmp_path, run):
    project, _, _, _ = run
    bad = scratch_project(tmp_path / "bad", {"rois": {"names": ["eyes", "nose"]}})
    (bad / "data").symlink_to(project / "data")
    proc = run_stage(bad, "extract_rois", check=False)
    assert proc.returncode == 2 and "rois.names" in proc.stderr and "Traceback" not in proc.stderr
    bad = scratch_project(tmp_path / "bad2", {"extract_rois": {"margin": {"mouth": -1}}})
    (bad / "data").symlink_to(project / "data")
    proc = run_stage(bad, "extract_rois", check=False)
    assert proc.returncode == 2 and "extract_rois.margin.mouth" in proc.stderr
    empty = scratch_project(tmp_path / "empty")
    proc = run_stage(empty, "extract_rois", check=False)
    assert proc.returncode == 2 and "filter_emotion" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_on_the_demo_dag_every_curated_face_reaches_each_manifest(demo_project):
    """Downstream of the real filters (the session's demo DAG): nothing filter_emotion kept is lost, no face with a
    hidden feature or a flipped label gets through, and both domains reach train and test for every ROI."""
    fe = pd.read_parquet(demo_project / "data/filtered/filter_emotion.parquet")
    kept = set(fe.id[fe.kept])
    truth = pd.read_parquet(demo_project / "data/demo_truth.parquet")
    for roi in ROIS:
        manifest = pd.read_parquet(demo_project / "data/rois" / f"{roi}.parquet").merge(truth, on="id")
        assert set(manifest.id) == kept and len(manifest) == len(kept), roi
        assert (manifest.reason[~manifest.kept] != "").all(), roi
        rows = manifest[manifest.kept]
        assert rows.defect.isin(["none", "cut_off"]).all() and not rows.label_noise.any(), roi
        counts = rows.groupby(["split", "domain"]).size()
        assert len(counts) == 4 and counts.min() >= 20, (roi, counts.to_dict())
