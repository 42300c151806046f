"""ROI geometry: boxes from real label maps, crops, alphas, and the paste that inverts the crop (incl. off-image)."""

import cv2
import numpy as np
import pytest

from stages.lib.errors import StageError
from stages.lib.rois import (
    ROI_CLASSES,
    box_leaves_image,
    crop_roi,
    paste_roi,
    paste_weights,
    region_mask,
    roi_alpha,
    roi_box,
)

PHOTOS = ["1", "1112", "1309", "1319", "1321", "1333", "2095", "2116", "2125"]


def load_reference(shared_data, name, side=256):
    """A real CelebA-HQ photo and its BiSeNet label map, scaled down together (nearest for the labels)."""
    ref = shared_data / "parsing_reference"
    image = cv2.cvtColor(cv2.imread(str(ref / "images" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
    labels = cv2.imread(str(ref / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    labels = cv2.resize(labels, (side, side), interpolation=cv2.INTER_NEAREST)
    return image, labels


def textured(h, w, channels=3, seed=0):
    """A smooth but non-trivial image, so resampling errors are small and mistakes in geometry are large."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    planes = [
        127 + 100 * np.sin(xx / rng.uniform(6, 12) + c) * np.cos(yy / rng.uniform(6, 12) - c) for c in range(channels)
    ]
    img = np.stack(planes, axis=-1) if channels == 3 else planes[0]
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- boxes -----------------------------------------------------------------------------------------------------


def test_boxes_are_square_contain_the_region_and_keep_its_aspect(shared_data):
    for name in PHOTOS:
        image, labels = load_reference(shared_data, name)
        for roi, margin in [("eyes", 0.25), ("mouth", 0.35), ("face", 0.15)]:
            box = roi_box(labels, roi, margin)
            if box is None:
                continue
            x, y, w, h = box
            assert w == h and all(isinstance(v, int) for v in box)
            ys, xs = np.nonzero(region_mask(labels, roi))
            assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
            longest = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert w == int(np.ceil(longest * (1 + 2 * margin)))


def test_eyes_box_needs_eyes_and_glasses_hide_them(shared_data):
    # In 1321 glasses cover the eyes: brows alone must not make an "eyes" ROI.
    _, labels = load_reference(shared_data, "1321")
    assert roi_box(labels, "eyes", 0.25) is None
    assert roi_box(labels, "mouth", 0.35) is not None
    assert roi_box(np.zeros((32, 32), np.uint8), "face", 0.1) is None


def test_box_is_centred_and_margin_grows_it():
    labels = np.zeros((100, 100), np.uint8)
    labels[40:50, 30:70] = 12  # a wide 40x10 lip
    assert roi_box(labels, "mouth", 0.0) == (30, 25, 40, 40)
    assert roi_box(labels, "mouth", 0.5) == (10, 5, 80, 80)
    with pytest.raises(StageError):
        roi_box(labels, "nose", 0.1)
    with pytest.raises(StageError):
        roi_box(labels, "mouth", -0.1)


def test_grow_dilates_the_region_by_a_fraction_of_its_width_for_box_and_alpha():
    labels = np.zeros((100, 100), np.uint8)
    labels[45:50, 30:70] = 12  # a 40x5 neutral lip
    grown = region_mask(labels, "mouth", 0.25)  # radius 10 px
    ys, xs = np.nonzero(grown)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 79, 35, 59)
    assert grown[region_mask(labels, "mouth")].all()
    assert roi_box(labels, "mouth", 0.0, 0.25) == (20, 18, 60, 60)
    alpha = roi_alpha(labels, "mouth", (20, 18, 60, 60), 60, 0.0, 0.25)
    assert np.array_equal(alpha > 0, grown[18:78, 20:80])
    assert np.array_equal(region_mask(labels, "mouth", 0.0), region_mask(labels, "mouth"))
    with pytest.raises(StageError):
        region_mask(labels, "mouth", -0.5)
    # dilated in a window around the region: the same as dilating the whole map, also where it meets the edges
    edge = np.zeros((80, 120), np.uint8)
    edge[70:80, 0:50] = 13
    for grow in (0.1, 0.4, 1.5):
        r = int(round(grow * 50))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        whole = cv2.dilate((edge == 13).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        assert np.array_equal(region_mask(edge, "mouth", grow), whole.astype(bool))


# ---- crop --------------------------------------------------------------------------------------------------------


def test_crop_inside_at_scale_one_is_the_pixels():
    img = textured(60, 80)
    assert np.array_equal(crop_roi(img, (10, 5, 30, 30), 30), img[5:35, 10:40])
    grey = textured(60, 80, channels=1)
    assert crop_roi(grey, (10, 5, 30, 30), 16).shape == (16, 16)


def test_crop_reflects_outside_the_image():
    img = textured(40, 50)
    crop = crop_roi(img, (-5, -3, 20, 20), 20)
    # row -3 mirrors row 3, column -5 mirrors column 5 (reflection about the edge pixel)
    assert np.array_equal(crop[0, 5], img[3, 0])
    assert np.array_equal(crop[3, 0], img[0, 5])
    assert np.array_equal(crop[3:, 5:], img[0:17, 0:15])
    assert box_leaves_image((-5, -3, 20, 20), img.shape)
    assert not box_leaves_image((0, 0, 50, 40), img.shape)
    assert box_leaves_image((31, 0, 20, 20), img.shape)
    # a box far larger than the image still reflects back and forth instead of failing
    assert crop_roi(img, (-100, -100, 250, 250), 32).shape == (32, 32, 3)


def test_crop_rejects_bad_boxes():
    img = textured(20, 20)
    for bad in [(0, 0, 0, 5), (0, 0, 5), (0.5, 0, 5, 5), None, ("a", 0, 5, 5)]:
        with pytest.raises(StageError):
            crop_roi(img, bad, 8)


# ---- alpha -------------------------------------------------------------------------------------------------------


def test_alpha_is_opaque_on_the_region_and_feathers_outward(shared_data):
    _, labels = load_reference(shared_data, "1112")
    box = roi_box(labels, "mouth", 0.35)
    size = box[2]  # scale 1, so crop pixels are source pixels
    alpha = roi_alpha(labels, "mouth", box, size, 0.15)
    region = region_mask(crop_roi(labels, box, size), "mouth")
    assert alpha.dtype == np.uint8 and alpha.shape == (size, size)
    assert (alpha[region] == 255).all()
    soft = (alpha > 0) & (alpha < 255)
    assert soft.sum() > 0.5 * region.sum()  # a real feather band, not a hard edge
    # support ends about feather * size beyond the region
    dist = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[alpha > 0].max() <= 0.15 * size + 2
    hard = roi_alpha(labels, "mouth", box, size, 0.0)
    assert np.array_equal(hard > 0, region)


def test_alpha_fades_out_before_the_crop_edge(shared_data):
    # a seam at the box border would show after the paste: the margin bounds the feather
    for name in PHOTOS[:5]:
        _, labels = load_reference(shared_data, name)
        for roi, margin, size in [("eyes", 0.25, 64), ("mouth", 0.35, 64), ("face", 0.08, 128)]:
            box = roi_box(labels, roi, margin)
            if box is None:
                continue
            alpha = roi_alpha(labels, roi, box, size, 0.3)
            assert max(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max(), alpha[:, -1].max()) == 0, (name, roi)
            assert ((alpha > 0) & (alpha < 255)).any()


def test_alpha_is_zero_where_the_box_leaves_the_image():
    labels = np.zeros((40, 40), np.uint8)
    labels[:, :] = 1  # skin everywhere: the alpha must still stop at the image edge
    alpha = roi_alpha(labels, "face", (-20, -20, 40, 40), 40, 0.0)
    assert (alpha[:20, :] == 0).all() and (alpha[:, :20] == 0).all() and (alpha[20:, 20:] == 255).all()


# ---- paste: the round trip -----------------------------------------------------------------------------------------

EDGE_BOXES = {
    "inside": (20, 15, 40, 40),
    "left": (-12, 20, 40, 40),
    "right": (70, 20, 40, 40),
    "top": (25, -15, 40, 40),
    "bottom": (25, 50, 40, 40),
    "top_left": (-10, -10, 40, 40),
    "top_right": (75, -8, 40, 40),
    "bottom_left": (-9, 55, 40, 40),
    "bottom_right": (80, 60, 40, 40),
    "covers_all": (-20, -20, 140, 120),
    "fully_outside": (200, 5, 40, 40),
}


@pytest.mark.parametrize("name", sorted(EDGE_BOXES))
@pytest.mark.parametrize("size", [40, 24, 64])
def test_round_trip_reproduces_the_box_and_touches_nothing_else(name, size):
    img = textured(80, 100, seed=3)
    box = EDGE_BOXES[name]
    x, y, w, h = box
    crop = crop_roi(img, box, size)
    full = np.full((size, size), 255, np.uint8)
    out = paste_roi(img, crop, box, full)
    inside = np.zeros(img.shape[:2], bool)
    inside[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
    assert np.array_equal(out[~inside], img[~inside])
    if size == w:
        assert np.array_equal(out, img)  # no resampling, so the round trip is exact
    elif inside.any():
        err = np.abs(out[inside].astype(int) - img[inside].astype(int))
        blur = np.abs(cv2.GaussianBlur(img, (0, 0), w / size)[inside].astype(int) - img[inside].astype(int))
        # resampling error only: no larger than what a blur of one crop pixel does to this image
        assert err.mean() <= max(blur.mean(), 1.0), (err.mean(), blur.mean())


@pytest.mark.parametrize("name", sorted(EDGE_BOXES))
def test_paste_changes_zero_pixels_outside_the_alpha_support(name):
    img = textured(80, 100, seed=5) // 3  # all below 86, so pasted white differs wherever it lands
    box = EDGE_BOXES[name]
    size = 32
    alpha = np.zeros((size, size), np.uint8)
    alpha[4:20, 10:30] = 255  # a blob off-centre, so a flipped or shifted paste would show
    new = np.full((size, size, 3), 255, np.uint8)
    out = paste_roi(img, new, box, alpha)
    weights = paste_weights(alpha, box, img.shape)
    changed = np.any(out != img, axis=-1)
    assert not changed[weights == 0].any()
    # and independently of paste_weights: the support is the blob's back-projection, widened by one crop pixel
    x, y, w, h = box
    sx, sy = w / size, h / size
    allowed = np.zeros(img.shape[:2], bool)
    r0, r1 = int(np.floor(y + (4 - 1) * sy)), int(np.ceil(y + (20 + 1) * sy))
    c0, c1 = int(np.floor(x + (10 - 1) * sx)), int(np.ceil(x + (30 + 1) * sx))
    allowed[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    assert not changed[~allowed].any()
    core = np.zeros_like(allowed)
    r0, r1 = int(np.ceil(y + 5 * sy)), int(np.floor(y + 19 * sy))
    c0, c1 = int(np.ceil(x + 11 * sx)), int(np.floor(x + 29 * sx))
    core[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    assert changed[core].all()  # where alpha is 1 the new content did land


def test_paste_on_real_photo_with_real_alpha(shared_data):
    image, labels = load_reference(shared_data, "2095")
    box = roi_box(labels, "eyes", 0.25)
    crop, alpha = crop_roi(image, box, 64), roi_alpha(labels, "eyes", box, 64, 0.15)
    same = paste_roi(image, crop, box, alpha)
    weights = paste_weights(alpha, box, image.shape)
    assert np.array_equal(same[weights == 0], image[weights == 0])
    region = region_mask(labels, "eyes")
    assert (weights[region] > 0.95).mean() > 0.95  # the eyes and brows themselves are replaced
    err = np.abs(same.astype(int) - image.astype(int))[weights > 0]
    assert err.mean() < 6  # 64 px crop of a ~100 px box: resampling error only
    # grey image, RGB crop: the crop is converted to the image's layout
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert paste_roi(grey, crop, box, alpha).shape == grey.shape


def test_roi_classes_follow_design():
    assert set(ROI_CLASSES["eyes"]) == {2, 3, 4, 5}
    assert set(ROI_CLASSES["mouth"]) == {11, 12, 13}
    assert {1, 2, 3, 4, 5, 10, 11, 12, 13} <= set(ROI_CLASSES["face"])
    assert not {0, 14, 16, 17, 18} & set(ROI_CLASSES["face"])
