"""FaceMesh's visibility check: its measures on crafted inputs, occluders painted over a real photo, and what
filter_masks' rule then rejects on the demo (per recorded defect) and on real photos.

Run: pytest tests/test_parse_visibility.py   (300 faces of the session demo DAG and 150 photos through FaceMesh)
"""

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.lib.parsing.visibility import (
    BACKGROUND,
    MOUTH,
    SKIN,
    VisibilityThresholds,
    class_mask,
    eye_opening,
    hidden_features,
    luminance,
    measure,
    median,
    ring_around,
    spread,
)
from tests.helpers.demo_dag import DEMO
from tests.helpers.visibility_rates import HIDDEN_DEFECTS, find_landmarks, rates_by_defect, rejected

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
LIMITS = VisibilityThresholds()
DEMO_N = DEMO["ingest"]["demo"]["n"]  # the session demo DAG's faces (tests/helpers/demo_dag.py)
REAL_N = 150


# ------------------------------------------------------------------------------------------ measures, crafted input


def disc(shape, cx, cy, rx, ry):
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1


def crafted_eye(cover=None):
    """Luminance of skin (150) with a drawn eye (sclera 230, iris 60), optionally `cover`ed by a flat patch."""
    lum = np.full((60, 80), 150.0, np.float32)
    eye = disc(lum.shape, 40, 30, 14, 6)
    lum[eye] = 230.0
    lum[eye & disc(lum.shape, 40, 30, 5, 5)] = 60.0
    if cover is not None:
        lum[15:45, 15:65] = cover
    return lum, eye, ~eye


def test_a_drawn_eye_measures_as_visible():
    lum, eye, skin = crafted_eye()
    m = measure(lum, eye, skin, ring_px=4, skin_level=150.0)
    assert m["contrast"] >= LIMITS.eye_dim and m["dark"] >= LIMITS.eye_dark and m["bright"] > 0


def test_a_flat_dark_bar_over_the_eye_measures_as_covered():
    lum, eye, skin = crafted_eye(cover=25.0)
    m = measure(lum, eye, skin, ring_px=4, skin_level=150.0)
    assert m["contrast"] < LIMITS.eye_contrast and m["dark"] < LIMITS.eye_dark


def test_a_skin_coloured_patch_has_no_contrast():
    lum, eye, skin = crafted_eye(cover=150.0)
    assert measure(lum, eye, skin, ring_px=4, skin_level=150.0)["contrast"] < LIMITS.eye_contrast


def test_too_few_pixels_cannot_be_judged():
    lum, _, skin = crafted_eye()
    tiny = np.zeros_like(skin)
    tiny[30, 40] = True
    assert measure(lum, tiny, skin, ring_px=4, skin_level=150.0) is None


def test_eye_opening_is_lid_gap_over_width():
    points = np.zeros((478, 2))
    points[263], points[362] = (0, 0), (40, 0)  # the subject's left eye, 40 px wide
    for k, (up, low) in enumerate(((385, 380), (386, 374), (387, 373))):
        points[up], points[low] = (10 + 10 * k, -4), (10 + 10 * k, 4)
    assert eye_opening(points, 4) == pytest.approx(8 / 40)


# ------------------------------------------------- fast rewrites: the numbers of the formulas they replace, exactly


def dilated_ring(mask, width):
    """The ring as it was first written: OpenCV's elliptic dilation minus the mask."""
    side = 2 * width + 1
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    return grown.astype(bool) & ~mask


def test_ring_is_the_elliptic_dilation_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(300):  # both of ring_around's paths: small rings and windows go to OpenCV, the rest to runs
        rows, cols = rng.integers(3, 90, 2)
        mask = rng.random((rows, cols)) < rng.choice([0.0, 0.005, 0.2, 0.9])
        mask = mask[rng.integers(0, 2) :, rng.integers(0, 3) :]  # views, not only fresh arrays
        width = int(rng.integers(1, 40))
        assert np.array_equal(ring_around(mask, width), dilated_ring(mask, width)), (mask.shape, width)


@pytest.fixture(scope="module")
def grey_faces(facemesh, shared_data):
    """(grey image, landmark-only label map) of 12 real grey photos FaceMesh finds a face in."""
    from stages.lib.parsing.facemesh import rasterise

    paths = sorted((shared_data / "facial_expressions" / "images").glob("*"))[::150]
    faces = []
    for image in (np.asarray(Image.open(p).convert("L")) for p in paths):
        pts = facemesh.landmarks(facemesh.detection_input(image)[0])
        if pts is not None:
            h, w = image.shape
            faces.append((image, rasterise(pts * [w, h], h, w)))
    assert len(faces) >= 12
    return faces[:12]


def test_rewrites_give_the_same_numbers_on_real_photos(grey_faces):
    for image, label_map in grey_faces:
        skin = label_map == SKIN
        lum = luminance(image)
        assert median(image[skin]) == float(np.median(lum[skin]))
        for classes in ((4,), (5,), (2,), (3,), MOUTH):
            feature = class_mask(label_map, classes)
            assert np.array_equal(feature, np.isin(label_map, classes))
            rows, cols = np.flatnonzero(feature.any(axis=1)), np.flatnonzero(feature.any(axis=0))
            inside = feature[max(rows[0] - 40, 0) : rows[-1] + 40, max(cols[0] - 40, 0) : cols[-1] + 40]
            for width in (2, 6, 13, 19, 30):
                assert np.array_equal(ring_around(inside, width), dilated_ring(inside, width)), (classes, width)
            values = image[feature]
            assert spread(values) == tuple(np.percentile(values.astype(np.float32), [5, 95]))
            assert median(values) == float(np.median(values.astype(np.float32)))
            # the whole measure, grey pixels (histograms) against their float luminance (numpy's sorts)
            assert measure(image, feature, skin, 19, 150.0) == measure(lum, feature, skin, 19, 150.0)


def test_grey_percentiles_match_numpy_on_any_sample():
    rng = np.random.default_rng(1)
    for n in list(range(1, 40)) + [255, 256, 1001, 4096]:
        values = rng.integers(0, 256, n).astype(np.uint8) if n % 2 else rng.integers(90, 96, n).astype(np.uint8)
        assert spread(values) == tuple(np.percentile(values.astype(np.float32), [5, 95])), n
        assert median(values) == float(np.median(values.astype(np.float32))), n


# ---------------------------------------------------------------------- occluders painted over a real photo's face


@pytest.fixture(scope="module")
def real_face(facemesh, shared_data):
    """A reference photo, its landmarks in pixels and its landmark-only label map."""
    image = np.asarray(Image.open(shared_data / "parsing_reference" / "images" / "1112.jpg").convert("RGB"))
    h, w = image.shape[:2]
    pts = facemesh.landmarks(facemesh.detection_input(image)[0])
    assert pts is not None
    from stages.lib.parsing.facemesh import rasterise

    pixels = pts * [w, h]
    return image, pixels, rasterise(pixels, h, w)


def test_a_real_unoccluded_face_keeps_every_feature(real_face):
    image, pixels, label_map = real_face
    assert hidden_features(image, pixels, label_map, LIMITS) == {}


def test_a_bar_over_real_eyes_hides_them(real_face):
    image, pixels, label_map = real_face
    eyes = np.isin(label_map, (4, 5))
    rows = np.flatnonzero(eyes.any(axis=1))
    covered = image.copy()
    covered[rows[0] - 15 : rows[-1] + 15, :] = (20, 22, 25)  # the same landmarks, as FaceMesh would still place them
    hidden = hidden_features(covered, pixels, label_map, LIMITS)
    assert hidden.get(4) == BACKGROUND and hidden.get(5) == BACKGROUND


def test_a_skin_coloured_hand_over_a_real_mouth_hides_it(real_face):
    image, pixels, label_map = real_face
    mouth = np.isin(label_map, (11, 12, 13))
    rows, cols = np.flatnonzero(mouth.any(axis=1)), np.flatnonzero(mouth.any(axis=0))
    covered = image.copy()
    tone = np.median(image[label_map == SKIN], axis=0).astype(np.uint8)
    covered[rows[0] - 20 : rows[-1] + 20, cols[0] - 30 : cols[-1] + 30] = tone
    hidden = hidden_features(covered, pixels, label_map, LIMITS)
    assert all(hidden.get(c) == BACKGROUND for c in (11, 12, 13)) and 4 not in hidden


def test_closed_lids_become_skin(real_face):
    image, pixels, label_map = real_face
    closed = pixels.copy()
    for up, low in ((385, 380), (386, 374), (387, 373), (160, 144), (159, 145), (158, 153)):
        closed[up] = closed[low] = (pixels[up] + pixels[low]) / 2  # lids meet
    hidden = hidden_features(image, closed, label_map, LIMITS)
    assert hidden.get(4) == SKIN and hidden.get(5) == SKIN


# ------------------------------------------------------------------------------ what filter_masks rejects, measured


@pytest.fixture(scope="module")
def demo(facemesh, demo_project):
    """(images, defects, landmarks) of the session demo DAG's faces (300 at 256 px, seed 0: the ones ingest drew and
    stored; its one exact duplicate is a reject without pixels), read back rather than drawn a second time."""
    import pandas as pd

    from stages.lib.codec import decode_image

    stored = pd.read_parquet(demo_project / "data" / "images", columns=["source_key", "image"]).dropna()
    truth = pd.read_parquet(demo_project / "data" / "demo_truth.parquet", columns=["source_key", "defect"])
    faces = stored.merge(truth, on="source_key").sort_values("source_key")
    assert len(faces) == DEMO_N - 1 and set(faces.defect) >= {*HIDDEN_DEFECTS, "none", "non_face", "too_small"}
    images = [decode_image(data) for data in faces.image]
    return images, list(faces.defect), find_landmarks(facemesh, images)


def test_demo_hidden_features_are_rejected_and_clean_faces_kept(facemesh, demo):
    images, defects, landmarks = demo
    after = rates_by_defect(defects, rejected(facemesh, images, landmarks, LIMITS))
    before = rates_by_defect(defects, rejected(facemesh, images, landmarks, None))
    for defect in HIDDEN_DEFECTS:
        share, count = after[defect]
        assert count >= 9 and share >= 0.9, (defect, after)
        assert before[defect][0] < 0.5, (defect, before)  # it is the check that removes them, not the size rule
    assert after["none"][0] <= 0.05, after
    assert after["non_face"][0] == 1.0 and after["too_small"][0] == 1.0


def test_real_photos_are_mostly_kept(facemesh, shared_data):
    paths = sorted((shared_data / "facial_expressions" / "images").glob("*"))
    chosen = np.random.default_rng(0).choice(len(paths), REAL_N, replace=False)
    images = [np.asarray(Image.open(paths[i])) for i in sorted(chosen)]
    share = float(np.mean(rejected(facemesh, images, find_landmarks(facemesh, images), LIMITS)))
    assert share <= 0.08, f"{share:.3f} of {REAL_N} mostly unoccluded real photos rejected"
