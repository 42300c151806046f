"""evaluate: the overlay evaluation on real photos with tiny fake generators (identity, brightening, an untrained
ResNet in the real weights format) and a tiny real curator, its metric definitions, and its one-line errors."""
import json
import re

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from stages import evaluate as stage
from stages.lib.codec import content_id, decode_png, encode_png, to_grey
from stages.lib.curator import CuratorConfig, final_seed, judge_features, save_curator, train_net
from stages.lib.errors import StageError, run_stage
from stages.lib.evaluation import EvalConfig, Face, _rates, evaluate_faces, sample_sheet, translate
from stages.lib.judge import face_crop, load_judge
from stages.lib.labels import FER_ORDER
from stages.lib.networks import ResnetGenerator, generator_file, init_weights
from stages.lib.rois import crop_roi, roi_alpha, roi_box
from stages.lib.tables import write_table_atomic
from tests.stage_runner import scratch_project
from tests.test_rois import PHOTOS, load_reference

SIDE, SIZE = 128, 32
METRIC_KEYS = {"n_test", "n_real_target", "transfer_rate", "transfer_rate_binary", "baseline_rate",
               "baseline_rate_binary", "transfer_gain", "transfer_gain_binary", "target_prob_gain",
               "curator_transfer_rate", "curator_baseline_rate", "outside_changed_px", "psnr_image", "psnr_roi",
               "ssim_image", "ssim_roi", "kid_roi", "kid_roi_std", "brightness_shift", "brightness_shift_raw"}


class Brighten(torch.nn.Module):
    """A generator that keeps the content and lightens it: the brightness drift colour matching must undo."""

    def forward(self, x):
        return (x + 0.5).clamp(-1, 1)


def photo_faces(shared_data, roi="mouth", names=PHOTOS[:5]):
    faces = []
    for name in names:
        image, labels = load_reference(shared_data, name, SIDE)
        bbox = roi_box(labels, roi, 0.35)
        ys, xs = np.nonzero(np.isin(labels, (1, 2, 3, 4, 5, 10, 11, 12, 13)))
        face_bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        faces.append(Face(id=name, image=image, face_bbox=face_bbox, bbox=bbox, crop=crop_roi(image, bbox, SIZE),
                          alpha=roi_alpha(labels, roi, bbox, SIZE, 0.15), label_map=labels))
    return faces


@pytest.fixture(scope="module")
def judge():
    return load_judge()


@pytest.fixture(scope="module")
def faces(shared_data):
    return photo_faces(shared_data)


# ---- the evaluation on real photos ------------------------------------------------------------------------------

def test_identity_generator_gives_back_the_photo(faces, judge):
    generated = translate(torch.nn.Identity(), [f.crop for f in faces], "cpu")
    assert all(np.array_equal(g, f.crop) for g, f in zip(generated, faces))
    metrics, _ = evaluate_faces(faces, generated, judge, "neutral", "happy", [f.crop for f in faces],
                                EvalConfig(color_match="none"))
    assert set(metrics) == METRIC_KEYS
    assert metrics["outside_changed_px"] == 0
    assert metrics["psnr_roi"] > 30 and metrics["ssim_roi"] > 0.9 and metrics["brightness_shift"] < 1.0
    assert metrics["psnr_image"] > metrics["psnr_roi"]  # the unchanged rest of the photo adds to the whole-image PSNR
    assert abs(metrics["target_prob_gain"]) < 0.05
    # Generated == real: the unbiased MMD^2 of a set with itself is <= 0 (the kernel is positive definite).
    assert metrics["kid_roi"] <= 0
    assert metrics["curator_transfer_rate"] is None


@pytest.mark.parametrize("match", ["context", "mean_std", "histogram"])
def test_colour_matching_lowers_the_brightness_shift_of_a_brightening_generator(faces, judge, match):
    generated = translate(Brighten(), [f.crop for f in faces], "cpu")
    matched, _ = evaluate_faces(faces, generated, judge, "neutral", "happy", [], EvalConfig(color_match=match))
    plain, _ = evaluate_faces(faces, generated, judge, "neutral", "happy", [], EvalConfig(color_match="none"))
    assert plain["brightness_shift"] == plain["brightness_shift_raw"] > 20
    assert matched["brightness_shift_raw"] == pytest.approx(plain["brightness_shift_raw"])
    assert matched["brightness_shift"] < 0.1 * matched["brightness_shift_raw"]
    assert matched["outside_changed_px"] == plain["outside_changed_px"] == 0
    assert matched["psnr_roi"] > plain["psnr_roi"]
    assert matched["kid_roi"] is None  # no real target crops to compare with


def test_kid_grows_when_the_generated_crops_drift_from_the_real_ones(faces, judge):
    real = [f.crop for f in faces]
    config = EvalConfig(color_match="none")
    same, _ = evaluate_faces(faces, translate(torch.nn.Identity(), real, "cpu"), judge, "neutral", "happy", real,
                             config)
    drifted, _ = evaluate_faces(faces, translate(Brighten(), real, "cpu"), judge, "neutral", "happy", real, config)
    assert drifted["kid_roi"] > same["kid_roi"] + 0.01


def test_poisson_blend_keeps_outside_pixels_and_the_lighting(faces, judge):
    generated = translate(Brighten(), [f.crop for f in faces], "cpu")
    metrics, _ = evaluate_faces(faces, generated, judge, "neutral", "happy", [],
                                EvalConfig(color_match="none", blend="poisson"))
    assert metrics["outside_changed_px"] == 0
    assert metrics["brightness_shift"] < 0.5 * 20


def test_curator_rates_come_from_the_callable(shared_data, judge):
    faces = photo_faces(shared_data, roi="face")

    seen_maps = []

    def bright_is_happy(images, boxes, maps):
        # A stand-in curator with a rule we can predict: a face square a quarter white is "happy".
        seen_maps.append(maps)
        happy = np.array([(to_grey(face_crop(im, b)) >= 250).mean() > 0.25 for im, b in zip(images, boxes)], float)
        return np.stack([1 - happy, happy], axis=1), ["neutral", "happy"]

    generated = translate(lambda x: torch.ones_like(x), [f.crop for f in faces], "cpu")  # paint the face white
    metrics, _ = evaluate_faces(faces, generated, judge, "neutral", "happy", [], EvalConfig(color_match="none"),
                                curator=bright_is_happy)
    assert metrics["curator_baseline_rate"] == 0.0 and metrics["curator_transfer_rate"] == 1.0
    # originals and composites both get the original's label map (the paste changes pixels only inside the ROI)
    assert len(seen_maps) == 2 and all(m is f.label_map for maps in seen_maps for m, f in zip(maps, faces))


def test_rates_distinguish_argmax_from_source_vs_target():
    probs = np.zeros((4, len(FER_ORDER)))
    src, tgt, sad = FER_ORDER.index("neutral"), FER_ORDER.index("happy"), FER_ORDER.index("sad")
    probs[0, [tgt, src]] = 0.7, 0.3       # happy wins outright
    probs[1, [sad, tgt, src]] = 0.5, 0.3, 0.2  # beats neutral, but the argmax is sad
    probs[2, [src, tgt]] = 0.6, 0.4
    probs[3, [sad, src]] = 0.9, 0.1
    assert _rates(probs, src, tgt) == (0.25, 0.5)


def test_an_emotion_the_judge_lacks_is_an_error(faces, judge):
    with pytest.raises(StageError, match="contempt"):
        evaluate_faces(faces, [f.crop for f in faces], judge, "neutral", "contempt", [], EvalConfig())


def test_sample_sheet_has_four_columns_per_face(faces, judge, tmp_path):
    _, picks = evaluate_faces(faces, [f.crop for f in faces], judge, "neutral", "happy", [], EvalConfig(n_samples=3))
    sheet = np.asarray(Image.open(sample_sheet(picks, tmp_path / "s.png", thumb=40)))
    cell_w, cell_h = 40 + 4, 40 + 12 + 4
    assert sheet.shape[:2] == (3 * cell_h, 4 * cell_w)


# ---- the stage, in a scratch project -----------------------------------------------------------------------------

def write_tables(root, shared_data, n_a=5, n_b=4, roi="mouth"):
    """data/images, data/parsed and data/rois/<roi>.parquet in the contract's columns, from the real photos: the
    first n_a photos are domain-A test faces, the next n_b domain-B test faces, plus a train and a rejected row."""
    images, parsed, rois = [], [], []
    for i, name in enumerate(PHOTOS[:n_a + n_b]):
        (face,) = photo_faces(shared_data, roi, [name])
        png = encode_png(face.image)
        fid = content_id(png)
        images.append({"id": fid, "split": "test", "label": "neutral" if i < n_a else "happy", "image": png,
                       "kept": True, "reason": ""})
        parsed.append({"id": fid, "face_found": True, "face_bbox": face.face_bbox,
                       "label_map": encode_png(face.label_map)})
        rois.append({"id": fid, "roi": roi, "split": "test", "domain": "A" if i < n_a else "B", "kept": True,
                     "reason": "", "bbox": list(face.bbox), "crop": encode_png(face.crop),
                     "alpha": encode_png(face.alpha)})
    rois.append(dict(rois[0], id="train-row", split="train"))
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
    x = judge_features([to_grey(f.image) for f in faces], [f.face_bbox for f in faces],
                       label_maps=[f.label_map for f in faces])
    cfg = CuratorConfig(epochs=5, batch=4)
    net = train_net(x, y, 2, cfg, "cpu", seed=final_seed(cfg))
    save_curator(str(root / stage.CURATOR), net, dict(backbone="judge", input="grey_masks", size=48,
                                                      classes=[source, target], source=source, target=target))


def scratch(tmp_path, shared_data, overrides=None, **tables):
    # its own models/: the judge linked from the project, a generator and a curator of our own
    root = scratch_project(tmp_path / "proj", {"evaluate": {"device": "cpu", "kid_subsets": 5},
                                              **(overrides or {})})
    write_tables(root, shared_data, **tables)
    return root


def test_stage_writes_metrics_and_samples_deterministically(tmp_path, shared_data, monkeypatch):
    root = scratch(tmp_path, shared_data)
    write_generator(root)
    write_curator(root, shared_data)
    monkeypatch.chdir(root)
    stage.main(["mouth"])
    metrics = json.loads((root / "eval/mouth/metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_test"] == 5 and metrics["n_real_target"] == 4
    assert metrics["outside_changed_px"] == 0
    assert all(np.isfinite(v) for v in metrics.values())
    for key in ("curator_transfer_rate", "curator_baseline_rate"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0
    sheet = decode_png((root / "plots/evaluate/mouth.png").read_bytes())
    assert sheet.shape[1] == 4 * (96 + 4)
    first = (root / "eval/mouth/metrics.json").read_bytes()
    stage.main(["mouth"])
    assert (root / "eval/mouth/metrics.json").read_bytes() == first


def test_missing_weights_is_one_line_naming_the_roi(tmp_path, shared_data, monkeypatch, capsys):
    root = scratch(tmp_path, shared_data)
    monkeypatch.chdir(root)
    # run_stage is what `python -m stages.evaluate` runs: one line on stderr, exit status 2
    with pytest.raises(SystemExit) as exit_:
        run_stage(stage.main, ["mouth"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: evaluate@mouth: generator weights models/cyclegan/mouth/generator_AB.pt "
                              "not found") and "dvc repro train@mouth" in err[-1]
    (root / "models/cyclegan/mouth").mkdir(parents=True)
    (root / "models/cyclegan/mouth/generator_AB.pt").write_bytes(b"not a torch file")
    with pytest.raises(StageError, match=r"^evaluate@mouth: generator weights .* are unreadable"):
        stage.main(["mouth"])


def test_missing_or_mismatched_curator_is_one_line(tmp_path, shared_data, monkeypatch, capsys):
    root = scratch(tmp_path, shared_data)
    write_generator(root)
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_:
        run_stage(stage.main, ["mouth"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: evaluate@mouth: curator model models/curator/curator.pt not found; "
                       "train it with `dvc repro train_curator`")
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


def test_summary_table_lists_every_roi(tmp_path):
    from stages.summarize_eval import COLUMNS, summary_table

    for roi, rate in (("mouth", 0.5), ("eyes", 0.25)):
        (tmp_path / roi).mkdir()
        (tmp_path / roi / "metrics.json").write_text(json.dumps({"transfer_rate": rate, "kid_roi": None}))
    lines = summary_table(str(tmp_path)).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == len(COLUMNS) + 2
    assert lines[2].startswith("| eyes | - | 0.25 |") and lines[3].startswith("| mouth | - | 0.5 |")
    with pytest.raises(StageError, match="no "):
        summary_table(str(tmp_path / "nothing"))
