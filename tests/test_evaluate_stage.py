"""evaluate@roi, the stage: its tables, weights and curator written into a scratch project from real photos; the
metrics it writes, its one-line errors, the combined edit, and summarize_eval's table."""

import json
import re

import numpy as np
import pyarrow as pa
import pytest
import torch

from stages import evaluate as stage
from stages.lib import params as P
from stages.lib import paths
from stages.lib.codec import content_id, decode_png, encode_png, to_grey
from stages.lib.curator import CuratorConfig, final_seed, judge_features, save_curator, train_net
from stages.lib.errors import StageError, run_stage
from stages.lib.eval_faces import read_inputs
from stages.lib.networks import ResnetGenerator, generator_file, init_weights
from stages.lib.tables import write_table_atomic
from tests.helpers.stage_runner import scratch_project
from tests.test_evaluate import METRIC_KEYS, SIZE, WITH_CI, photo_faces
from tests.test_rois import PHOTOS


def write_tables(root, shared_data, n_a=5, n_b=2, roi="mouth", without=()):
    """data/images, data/parsed and data/rois/<roi>.parquet in the contract's columns, from the real photos: the
    first n_a photos are domain-A test faces, the next n_b domain-B test faces, the last two one train face of each
    domain (the geometry judge fits its cut on them), plus a rejected row. `without`: photos left out (no such
    region)."""
    images, parsed, rois = [], [], []
    names = PHOTOS[: n_a + n_b] + PHOTOS[-2:]
    for i, name in enumerate(names):
        if name in without:
            continue
        (face,) = photo_faces(shared_data, roi, [name])
        png = encode_png(face.image)
        fid = content_id(png)
        split = "test" if i < n_a + n_b else "train"
        domain = "A" if i < n_a or i == len(names) - 2 else "B"
        images.append(
            {
                "id": fid,
                "split": split,
                "label": "neutral" if domain == "A" else "happy",
                "image": png,
                "image_format": "png",
                "kept": True,
                "reason": "",
            }
        )
        parsed.append(
            {"id": fid, "face_found": True, "face_bbox": face.face_bbox, "label_map": encode_png(face.label_map)}
        )
        rois.append(
            {
                "id": fid,
                "roi": roi,
                "split": split,
                "domain": domain,
                "kept": True,
                "reason": "",
                "bbox": list(face.bbox),
                "crop": encode_png(face.crop),
                "alpha": encode_png(face.alpha),
            }
        )
    rois.append(dict(rois[0], id="rejected-row", kept=False, reason="roi_small", bbox=None, crop=None, alpha=None))
    write_table_atomic(pa.Table.from_pylist(images), str(root / "data/images/part-00000.parquet"))
    write_table_atomic(pa.Table.from_pylist(parsed), str(root / "data/parsed/part-00000.parquet"))
    write_table_atomic(pa.Table.from_pylist(rois), str(root / f"data/rois/{roi}.parquet"))


def write_generator(root, roi="mouth", size=SIZE):
    """An untrained, seeded ResNet generator in train's file format (the real loader reads it)."""
    net = init_weights(ResnetGenerator(ngf=4, n_blocks=1), generator=torch.Generator().manual_seed(0))
    path = root / f"models/cyclegan/{roi}/generator_AB.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = dict(roi=roi, size=size, value_range=[-1.0, 1.0], direction="A->B", **net.config)
    torch.save(generator_file(config, net.state_dict()), path)


def write_curator(root, shared_data, source="neutral", target="happy"):
    """A real (tiny) final curator in train_curator's format: the default judge backbone and grey_masks input,
    trained on all nine photos labelled as write_tables labels them (first five source, rest target)."""
    faces = [photo_faces(shared_data, "mouth", [name])[0] for name in PHOTOS]
    y = np.array([0] * 5 + [1] * (len(faces) - 5))
    x = judge_features(
        [to_grey(f.image) for f in faces], [f.face_bbox for f in faces], label_maps=[f.label_map for f in faces]
    )
    cfg = CuratorConfig(epochs=5, batch=4)
    net = train_net(x, y, 2, cfg, "cpu", seed=final_seed(cfg))
    save_curator(
        str(root / paths.CURATOR),
        net,
        dict(backbone="judge", input="grey_masks", size=48, classes=[source, target], source=source, target=target),
    )


def scratch(tmp_path, shared_data, overrides=None, **tables):
    # its own models/: the judge linked from the project, a generator and a curator of our own
    root = scratch_project(
        tmp_path / "proj",
        {
            "evaluate": {"device": "cpu", "kid_subsets": 5, "resamples": 200, "identity": True, "workers": 1},
            **(overrides or {}),
        },
    )
    write_tables(root, shared_data, **tables)
    return root


def test_stage_writes_metrics_and_samples_deterministically(tmp_path, shared_data, monkeypatch):
    root = scratch(tmp_path, shared_data)
    write_generator(root)
    write_curator(root, shared_data)
    monkeypatch.chdir(root)
    stage.main(["mouth"])
    metrics = json.loads((root / "eval/mouth/metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_test"] == 5 and metrics["n_real_target"] == 2
    assert metrics["outside_changed_px"] == metrics["control_outside_changed_px"] == 0
    assert metrics["identity_embedded"] == 5 and metrics["geometry_detected"] == 5
    assert metrics["control_identity_kept_rate"] == 1.0
    for key in WITH_CI - {"transfer_share"}:  # the share is null where the oracle gains nothing (here: 5 faces)
        lo, hi = metrics[f"{key}_ci"]
        assert lo <= metrics[key] <= hi, key
    for key in ("curator_transfer_rate", "curator_baseline_rate"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0
    sheet = decode_png((root / "plots/evaluate/mouth.png").read_bytes())
    assert sheet.shape[1] == 4 * (96 + 4)
    first = (root / "eval/mouth/metrics.json").read_bytes()
    stage.main(["mouth"])
    assert (root / "eval/mouth/metrics.json").read_bytes() == first


def test_streamed_numbers_do_not_depend_on_the_batch(tmp_path, shared_data, monkeypatch):
    # The 5 test faces in batches of 4 (the last one alone) and in one batch of 64: every per-face number (judge,
    # geometry, pixel scores, curator, KID features, the real target side) and every metric keeps its bits. The
    # photos stream in the images table's order, which is not the ids' (content hashes), so the reordering counts.
    root = scratch(tmp_path, shared_data, {"evaluate": {"identity": False}})
    write_generator(root)
    write_curator(root, shared_data)
    monkeypatch.chdir(root)
    runs = []
    for batch in (4, 64):
        p = stage.read_params(P.load())
        p["batch"] = p["config"].batch = batch
        with read_inputs("mouth") as inputs:
            run = stage.streamed_run("mouth", p, inputs)
        runs.append((run.per_face(), run.result()[0]))
    (small, small_metrics), (whole, whole_metrics) = runs
    assert {"comp_p", "oracle_geo", "control_hit", "px_ssim_roi", "cur_comp", "feat_comp", "target_agree"} <= set(whole)
    assert small.keys() == whole.keys() and len(whole["comp_p"]) == 5 and whole["target_features"].shape == (2, 128)
    for key, values in whole.items():
        assert np.array_equal(small[key], values, equal_nan=True), key
    assert small_metrics == whole_metrics


def error_line(capsys) -> str:
    """The last stderr line of evaluate@mouth run through run_stage, as `python -m stages.evaluate` runs it; the exit
    status must be 2, a StageError's."""
    with pytest.raises(SystemExit) as exit_:
        run_stage(stage.main, ["mouth"])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_weights_is_one_line_naming_the_roi(tmp_path, shared_data, monkeypatch, capsys):
    root = scratch(tmp_path, shared_data)
    write_curator(root, shared_data)
    monkeypatch.chdir(root)
    err = error_line(capsys)
    assert (
        err.startswith("error: evaluate@mouth: generator weights models/cyclegan/mouth/generator_AB.pt not found")
        and "dvc repro train@mouth" in err
    )
    (root / "models/cyclegan/mouth").mkdir(parents=True)
    (root / "models/cyclegan/mouth/generator_AB.pt").write_bytes(b"not a torch file")
    with pytest.raises(StageError, match=r"^evaluate@mouth: generator weights .* are unreadable"):
        stage.main(["mouth"])


def test_missing_or_mismatched_curator_is_one_line(tmp_path, shared_data, monkeypatch, capsys):
    root = scratch(tmp_path, shared_data)
    write_generator(root)
    monkeypatch.chdir(root)
    assert error_line(capsys) == (
        "error: evaluate@mouth: curator model models/curator/curator.pt not found; "
        "train it with `dvc repro train_curator`"
    )
    write_curator(root, shared_data, source="neutral", target="sad")
    with pytest.raises(StageError, match=r"trained for neutral->sad, the params ask for neutral->happy"):
        stage.main(["mouth"])


def test_empty_test_split_and_bad_params_name_the_roi(tmp_path, shared_data, monkeypatch):
    root = scratch(tmp_path, shared_data, n_a=0)
    write_generator(root)
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=r"^evaluate@mouth: .*no kept test rows of domain A"):
        stage.main(["mouth"])
    params = re.sub(r"color_match: \w+", "color_match: sepia", (root / "params.yaml").read_text())
    (root / "params.yaml").write_text(params)
    with pytest.raises(StageError, match=r"^evaluate@mouth: params: evaluate.color_match='sepia'"):
        stage.main(["mouth"])
    with pytest.raises(StageError, match="usage"):
        stage.main(["nose"])


def test_a_generator_trained_on_another_crop_size_is_refused(tmp_path, shared_data, monkeypatch):
    root = scratch(tmp_path, shared_data)
    write_generator(root, size=64)
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match="trained on 64px crops"):
        stage.main(["mouth"])


def test_summary_table_and_plot_list_every_roi_with_intervals(tmp_path):
    from stages.summarize_eval import ROWS, summary_plot, summary_table

    for roi, gain in (("mouth", 0.5), ("eyes", 0.25)):
        (tmp_path / roi).mkdir()
        (tmp_path / roi / "metrics.json").write_text(
            json.dumps(
                {"n_test": 40, "transfer_gain": gain, "transfer_gain_ci": [gain - 0.1, gain + 0.1], "kid_roi": None}
            )
        )
    lines = summary_table(str(tmp_path)).splitlines()
    assert lines[0] == "| metric | eyes | mouth |" and len(lines) == 2 + len(ROWS)
    assert "| transfer gain (`transfer_gain`) | 0.25 [0.15, 0.35] | 0.5 [0.4, 0.6] |" in lines
    assert "| KID (`kid_roi`) | - | - |" in lines
    picture = decode_png(open(summary_plot(str(tmp_path), str(tmp_path / "s.png")), "rb").read())
    assert picture.ndim == 3 and picture.shape[1] > 300
    first = (tmp_path / "s.png").read_bytes()
    summary_plot(str(tmp_path), str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes() == first  # DVC sees no change when nothing changed
    with pytest.raises(StageError, match="no "):
        summary_table(str(tmp_path / "nothing"))


# ---- identity, the geometry judge, the oracle ---------------------------------------------------------------------


def test_stage_scores_the_eyes_and_mouth_translators_together(tmp_path, shared_data, monkeypatch):
    root = scratch(tmp_path, shared_data, {"evaluate": {"identity": False, "geometry": False}})
    for roi in ("eyes", "mouth"):  # mouth last: its image table has every photo; 1321's glasses hide its eyes
        write_tables(root, shared_data, roi=roi, without=("1321",) if roi == "eyes" else ())
        write_generator(root, roi)
    write_curator(root, shared_data)
    monkeypatch.chdir(root)
    stage.main(["combined"])
    metrics = json.loads((root / "eval/combined/metrics.json").read_text())
    assert metrics["n_test"] == 4 and metrics["n_real_target"] == 2  # the faces both manifests keep
    assert metrics["outside_changed_px"] == metrics["control_outside_changed_px"] == 0
    assert metrics["control_transfer_gain"] == 0 and metrics["kid_roi"] is None
    stage.main(["mouth"])
    mouth = json.loads((root / "eval/mouth/metrics.json").read_text())
    assert mouth["psnr_image"] > metrics["psnr_image"]  # two ROIs changed, not one
    assert (root / "plots/evaluate/combined.png").stat().st_size > 0
