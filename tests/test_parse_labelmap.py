import cv2
import numpy as np
import pytest

from stages.lib.boxes import mask_bbox
from stages.lib.codec import decode_png
from stages.lib.parsing.facemesh import walk_contours
from stages.lib.parsing.labelmap import class_counts, colourise, encode_label_map, iou, reference_ious


def test_class_counts_at_map_resolution():
    m = np.zeros((30, 50), np.uint8)
    m[5:10, 5:25] = 4
    m[20:22, :] = 13
    counts = class_counts(m)
    assert len(counts) == 19 and sum(counts) == 30 * 50
    assert counts[4] == 100 and counts[13] == 100 and counts[0] == 1500 - 200


def test_class_counts_rejects_ids_beyond_canonical():
    with pytest.raises(ValueError):
        class_counts(np.full((2, 2), 19, np.uint8))


def test_class_counts_are_the_bincount_of_any_map():
    rng = np.random.default_rng(0)
    for top in range(19):  # the per-id passes stop at the highest id present
        m = rng.integers(0, top + 1, (37, 23), dtype=np.uint8)
        assert class_counts(m) == np.bincount(m.ravel(), minlength=19).tolist()
    wide = rng.integers(0, 19, (9, 11)).astype(np.int32)  # not uint8: numpy's count
    assert class_counts(wide) == np.bincount(wide.ravel(), minlength=19).tolist()


def label_map_runs(rng, shape):
    """A map of horizontal and vertical bands of a few ids, like a drawn face, with some noise."""
    rows, cols = shape
    m = np.zeros(shape, np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, rows), rng.integers(0, cols)
        m[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = rng.integers(1, 19)
    m[rng.random(shape) < 0.01] = 13
    return m


def test_label_map_png_reads_back_in_any_reader_and_is_deterministic():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 300), (300, 1), (57, 91), (256, 256)):
        m = label_map_runs(rng, shape)
        data = encode_label_map(m)
        assert data == encode_label_map(m.copy())
        assert np.array_equal(decode_png(data), m)
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), m)
    assert np.array_equal(decode_png(encode_label_map(m[10:40, 5:60])), m[10:40, 5:60])  # a view
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(TypeError):
            encode_label_map(bad)


def test_iou_and_bbox():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True
    b[2:6, 0:4] = True
    assert iou(a, b) == pytest.approx(8 / 24)
    assert iou(np.zeros_like(a), np.zeros_like(a)) is None
    assert mask_bbox(b) == [0, 2, 4, 4]
    assert mask_bbox(np.zeros_like(a)) is None


def test_reference_ious_unions_sides_and_skips_absent_regions():
    ref = np.zeros((8, 8), np.uint8)
    pred = np.zeros((8, 8), np.uint8)
    ref[1, 1:4] = 2  # reference calls both brows "left"
    pred[1, 1:3] = 2
    pred[1, 3] = 3
    ref[6, 2:5] = 12
    ious = reference_ious(pred, ref)
    assert ious["brows"] == 1.0
    assert ious["eyes"] is None  # reference has no eye pixels: not judged
    assert ious["lips"] == 0.0


def test_colourise_distinct_colours():
    rgb = colourise(np.arange(19, dtype=np.uint8).reshape(1, 19))
    assert rgb.shape == (1, 19, 3)
    assert len({tuple(c) for c in rgb[0]}) == 19


def test_walk_contours_cycles_and_paths():
    parts = walk_contours([(1, 2), (2, 3), (3, 1), (10, 11), (11, 12)])
    shapes = sorted((sorted(nodes), closed) for nodes, closed in parts)
    assert shapes == [([1, 2, 3], True), ([10, 11, 12], False)]
    with pytest.raises(ValueError):
        walk_contours([(1, 2), (1, 3), (1, 4)])
