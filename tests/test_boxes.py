"""stages/lib/boxes.py: mask boxes, face boxes and square face crops."""

import numpy as np
import pytest

from stages.lib.boxes import face_box, face_crop, mask_bbox
from stages.lib.errors import StageError


def test_face_crop_is_a_square_around_the_box_and_replicates_edges():
    img = np.arange(100 * 120, dtype=np.int64).reshape(100, 120).astype(np.uint8)
    inside = face_crop(img, (40, 30, 20, 20), margin=0.5)
    assert inside.shape == (40, 40) and np.array_equal(inside, img[20:60, 30:70])
    wide = face_crop(img, (40, 30, 40, 20), margin=0.0)  # square on the longer side, centred
    assert np.array_equal(wide, img[20:60, 40:80])
    corner = face_crop(img, (0, 0, 10, 10), margin=0.5)  # leaves the image at top and left
    assert corner.shape == (20, 20)
    assert np.array_equal(corner[:5, 5:], np.repeat(img[:1, :15], 5, axis=0))
    assert np.array_equal(corner[5:, :5], np.repeat(img[:15, :1], 5, axis=1))
    rgb = np.stack([img] * 3, axis=2)
    assert np.array_equal(face_crop(rgb, (40, 30, 20, 20), margin=0.5), np.stack([inside] * 3, axis=2))


@pytest.mark.parametrize("bbox", [(0, 0, 0, 10), (0, 0, -5, 5), (0, 0, float("nan"), 3), "abcd", (1, 2, 3)])
def test_face_crop_rejects_bad_boxes(bbox):
    with pytest.raises(StageError):
        face_crop(np.zeros((10, 10), np.uint8), bbox)


def test_mask_bbox_is_the_box_of_the_true_pixels_for_any_layout():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 40, 2))) < rng.choice([0.0, 0.01, 0.5])
        for m in (mask, mask[1:, 2:], mask.astype(np.uint8) * 7, mask.astype(np.int32)):  # OpenCV's path and numpy's
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            want = None if rows.size == 0 else [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            assert mask_bbox(m) == want


def test_mask_bbox_and_face_box():
    mask = np.zeros((6, 8), bool)
    mask[2:5, 3:7] = True
    assert mask_bbox(mask) == [3, 2, 4, 3]
    assert mask_bbox(np.zeros_like(mask)) is None
    assert face_box(np.zeros((6, 8)), None) == (0, 0, 8, 6)
    assert face_box(np.zeros((6, 8)), [1, 2, 3, 4]) == [1, 2, 3, 4]
