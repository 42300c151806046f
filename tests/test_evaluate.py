"""evaluate: the overlay evaluation on real photos with tiny fake generators (identity, brightening, an untrained
ResNet in the real weights format) and a tiny real curator, its metric definitions, and its one-line errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from stages.lib.boxes import face_crop
from stages.lib.codec import to_grey
from stages.lib.errors import StageError
from stages.lib.eval_batch import hits
from stages.lib.eval_faces import Face, Part, sample_sheet, translate
from stages.lib.evaluation import EvalConfig, Judges, evaluate_faces
from stages.lib.judge import load_judge
from stages.lib.labels import FER_ORDER
from stages.lib.overlay import outside_changed_px
from stages.lib.rois import crop_roi, paste_weights, roi_alpha, roi_box
from tests.test_rois import PHOTOS, load_reference

SIDE, SIZE = 128, 32
# The headline numbers every run must report with an interval (stages/lib/evaluation.py defines them).
WITH_CI = {
    "transfer_rate",
    "transfer_gain",
    "target_prob_gain",
    "identity_kept_rate",
    "geometry_gain",
    "oracle_transfer_gain",
    "oracle_geometry_gain",
    "transfer_share",
    "control_transfer_gain",
    "control_identity_kept_rate",
}
METRIC_KEYS = (
    WITH_CI
    | {f"{k}_ci" for k in WITH_CI}
    | {
        "n_test",
        "n_real_target",
        "baseline_rate",
        "transfer_rate_binary",
        "baseline_rate_binary",
        "curator_transfer_rate",
        "curator_baseline_rate",
        "outside_changed_px",
        "control_outside_changed_px",
        "psnr_image",
        "psnr_roi",
        "ssim_image",
        "ssim_roi",
        "kid_roi",
        "control_kid_roi",
        "brightness_shift",
        "brightness_shift_raw",
        "identity_embedded",
        "identity_different_faces_kept_rate",
        "geometry_detected",
        "geometry_cut",
        "geometry_baseline_rate",
        "judge_label_agreement",
        "judge_label_agreement_ci",
    }
)


class Brighten(torch.nn.Module):
    """A generator that keeps the content and lightens it: the brightness drift colour matching must undo."""

    def forward(self, x):
        return (x + 0.5).clamp(-1, 1)


def photo_faces(shared_data, roi="mouth", names=PHOTOS[:5], side=SIDE, size=SIZE):
    faces = []
    for name in names:
        image, labels = load_reference(shared_data, name, side)
        bbox = roi_box(labels, roi, 0.35)
        ys, xs = np.nonzero(np.isin(labels, (1, 2, 3, 4, 5, 10, 11, 12, 13)))
        face_bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        faces.append(
            Face(
                id=name,
                image=image,
                face_bbox=face_bbox,
                bbox=bbox,
                crop=crop_roi(image, bbox, size),
                alpha=roi_alpha(labels, roi, bbox, size, 0.15),
                label_map=labels,
            )
        )
    return faces


@pytest.fixture(scope="module")
def judge():
    """The CNN judge alone (identity and geometry off: their own tests switch them on)."""
    return Judges(judge=load_judge())


@pytest.fixture(scope="module")
def faces(shared_data):
    return photo_faces(shared_data)


# ---- the evaluation on real photos ------------------------------------------------------------------------------


def test_identity_generator_gives_back_the_photo(faces, judge):
    generated = translate(torch.nn.Identity(), [f.crop for f in faces], "cpu")
    assert all(np.array_equal(g, f.crop) for g, f in zip(generated, faces))
    metrics, _ = evaluate_faces(
        faces, generated, judge, "neutral", "happy", [f.crop for f in faces], EvalConfig(color_match="none")
    )
    assert METRIC_KEYS <= set(metrics)
    assert metrics["outside_changed_px"] == 0
    lo, hi = metrics["transfer_gain_ci"]
    assert lo <= 0 <= hi and metrics["transfer_gain"] == metrics["control_transfer_gain"]
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
    same, _ = evaluate_faces(
        faces, translate(torch.nn.Identity(), real, "cpu"), judge, "neutral", "happy", real, config
    )
    drifted, _ = evaluate_faces(faces, translate(Brighten(), real, "cpu"), judge, "neutral", "happy", real, config)
    assert drifted["kid_roi"] > same["kid_roi"] + 0.01


def test_poisson_blend_keeps_outside_pixels_and_the_lighting(faces, judge):
    generated = translate(Brighten(), [f.crop for f in faces], "cpu")
    metrics, _ = evaluate_faces(
        faces, generated, judge, "neutral", "happy", [], EvalConfig(color_match="none", blend="poisson")
    )
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
    metrics, _ = evaluate_faces(
        faces,
        generated,
        Judges(judge.judge, curator=bright_is_happy),
        "neutral",
        "happy",
        [],
        EvalConfig(color_match="none"),
    )
    assert metrics["curator_baseline_rate"] == 0.0 and metrics["curator_transfer_rate"] == 1.0
    # originals and composites both get the original's label map (the paste changes pixels only inside the ROI)
    assert len(seen_maps) == 2 and all(m is f.label_map for maps in seen_maps for m, f in zip(maps, faces))


def test_rates_distinguish_argmax_from_source_vs_target():
    probs = np.zeros((4, len(FER_ORDER)))
    src, tgt, sad = FER_ORDER.index("neutral"), FER_ORDER.index("happy"), FER_ORDER.index("sad")
    probs[0, [tgt, src]] = 0.7, 0.3  # happy wins outright
    probs[1, [sad, tgt, src]] = 0.5, 0.3, 0.2  # beats neutral, but the argmax is sad
    probs[2, [src, tgt]] = 0.6, 0.4
    probs[3, [sad, src]] = 0.9, 0.1
    assert tuple(float(h.mean()) for h in hits(probs, src, tgt)) == (0.25, 0.5)


def test_an_emotion_the_judge_lacks_is_an_error(faces, judge):
    with pytest.raises(StageError, match="contempt"):
        evaluate_faces(faces, [f.crop for f in faces], judge, "neutral", "contempt", [], EvalConfig())


def test_sample_sheet_has_four_columns_per_face(faces, judge, tmp_path):
    _, picks = evaluate_faces(faces, [f.crop for f in faces], judge, "neutral", "happy", [], EvalConfig(n_samples=3))
    sheet = np.asarray(Image.open(sample_sheet(picks, tmp_path / "s.png", thumb=40)))
    cell_w, cell_h = 40 + 4, 40 + 12 + 4
    assert sheet.shape[:2] == (3 * cell_h, 4 * cell_w)


# ---- the stage, in a scratch project -----------------------------------------------------------------------------


def test_swapping_in_another_persons_face_loses_the_identity(shared_data, judge):
    # The face ROI of each CelebA-HQ photo replaced by the next photo's face (another person): dlib must see a new
    # person where the identity generator (each face's own crop) keeps every one.
    # 256 px photos, 128 px face crops: at 32 px the crop's own resampling costs dlib ~0.55 (see the control)
    faces = photo_faces(shared_data, roi="face", names=PHOTOS[:6], side=256, size=128)
    swapped = [faces[(i + 1) % len(faces)].crop for i in range(len(faces))]
    judges = Judges(judge.judge, identity=True)
    metrics, _ = evaluate_faces(faces, swapped, judges, "neutral", "happy", [], EvalConfig(color_match="none"))
    assert metrics["identity_embedded"] == len(faces)
    assert metrics["control_identity_kept_rate"] == 1.0
    assert metrics["identity_kept_rate"] <= 0.5
    assert metrics["identity_distance"] > metrics["control_identity_distance"] + 0.2


def test_the_oracle_pastes_real_target_crops_and_the_share_divides_by_it(faces, judge):
    from stages.lib.evaluation import oracle_pairs

    real = [f.crop for f in faces[::-1]]
    pairs = oracle_pairs(len(real), seed=0)  # face k pastes real[pairs[k % len(real)]]
    assert np.array_equal(oracle_pairs(len(real), seed=0), pairs) and sorted(pairs) == list(range(len(real)))
    metrics, _ = evaluate_faces(faces, real, judge, "neutral", "happy", real, EvalConfig(color_match="none"))
    assert metrics["oracle_transfer_gain"] is not None and metrics["oracle_geometry_gain"] is None  # geometry off
    if metrics["oracle_transfer_gain_ci"][0] > 0:
        assert metrics["transfer_share"] == pytest.approx(metrics["transfer_gain"] / metrics["oracle_transfer_gain"])
    else:  # a ceiling that may be 0 gives no share
        assert metrics["transfer_share"] is None and metrics["transfer_share_ci"] is None


def test_geometry_judge_reads_smiles_on_real_photos(shared_data):
    import csv

    from stages.lib.codec import decode_image
    from stages.lib.geometry import GeometryJudge, auc, fit_threshold

    folder = shared_data / "facial_expressions"
    by_label = {"neutral": [], "happiness": []}
    with open(folder / "legend.csv", newline="") as f:
        for row in csv.DictReader(f):
            group = by_label.get(row["emotion"].lower())
            if group is not None and len(group) < 30:
                group.append(decode_image((folder / "images" / row["image"]).read_bytes()))
    judge = GeometryJudge("mouth")
    neutral, happy = judge.scores(by_label["neutral"]), judge.scores(by_label["happiness"])
    judge.close()
    assert np.isfinite(neutral).sum() >= 28 and np.isfinite(happy).sum() >= 28
    assert auc(neutral, happy) > 0.8  # bench/judges.py: 0.93 on all 1,795 neutral and happy photos
    cut = fit_threshold(neutral, happy)
    assert (np.nanmean(happy > cut) + np.nanmean(neutral <= cut)) / 2 > 0.75


def test_geometry_features_follow_the_landmarks():
    from stages.lib.geometry import MOUTH_CORNERS, expression_features, expression_score

    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 200, (478, 2))
    pts[33], pts[263] = (100, 100), (200, 100)  # outer eye corners: inter-ocular distance 100, eye line level
    pts[13], pts[14] = (150, 180), (150, 184)  # lips' centre at y 182
    pts[61], pts[291] = (120, 182), (180, 182)  # corners level with it, 60 apart
    flat = expression_features(pts)
    assert flat["mouth_width"] == pytest.approx(0.6) and flat["corner_lift"] == pytest.approx(0.0)
    smile = pts.copy()
    smile[list(MOUTH_CORNERS)] = (110, 172), (190, 172)  # wider, corners 10 px up
    f = expression_features(smile)
    assert f["mouth_width"] == pytest.approx(0.8) and f["corner_lift"] == pytest.approx(0.1)
    assert expression_score(f, "smile") > expression_score(flat, "smile")
    # scale and rotation free: the same face twice as large and turned 30 degrees scores the same
    turn = np.deg2rad(30)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    assert expression_features(2 * smile @ rot.T)["corner_lift"] == pytest.approx(0.1)


def test_an_edit_of_several_rois_pastes_each_part_and_nothing_else(shared_data, judge):
    eyes, mouth = (photo_faces(shared_data, roi, PHOTOS[:2]) for roi in ("eyes", "mouth"))
    both = [replace(m, more=(Part(e.bbox, e.crop, e.alpha),)) for e, m in zip(eyes, mouth)]
    white = [tuple(np.full_like(p.crop, 255) for p in f.parts) for f in both]
    for face, crops in zip(both, white):
        out = face.paste(crops, "none", "alpha")
        for part in face.parts:  # each ROI went in where its own alpha is (nearly) full
            inside = paste_weights(part.alpha, part.bbox, face.image.shape) > 0.95
            assert inside.any() and (out[inside] >= 240).all()
        assert outside_changed_px(face.image, out, *face.support()) == 0
        assert outside_changed_px(face.image, out, face.alpha, face.bbox) > 0  # the eyes lie outside the mouth's
    metrics, picks = evaluate_faces(
        both, white, judge, "neutral", "happy", [f.own_crops() for f in both], EvalConfig(resamples=100, n_samples=2)
    )
    assert metrics["n_test"] == 2 and metrics["outside_changed_px"] == 0 and metrics["kid_roi"] is None
    assert metrics["control_outside_changed_px"] == 0 and len(picks.rows[0][1]) == 2
