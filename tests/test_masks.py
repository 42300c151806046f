"""The visibility rule on real parsing maps (../shared/data/parsing_reference) and on hand-made counts."""

import glob
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from stages.lib.masks import argwhere_region_counts, counts_matrix, region_counts, split_reasons, visibility_reasons
from stages.lib.parsing.labelmap import class_counts

MIN_PX = {"eyes": 200, "brows": 200, "lips": 200}


@pytest.fixture(scope="module")
def reference_maps(shared_data):
    files = sorted(glob.glob(str(shared_data / "parsing_reference" / "masks" / "*.png")))
    assert len(files) == 9
    return {os.path.basename(f)[:-4]: np.asarray(Image.open(f)) for f in files}


def test_stored_counts_give_the_argwhere_counts(reference_maps):
    maps = list(reference_maps.values())
    fast = region_counts(counts_matrix([class_counts(m) for m in maps]))
    slow = np.stack([argwhere_region_counts(m) for m in maps])
    np.testing.assert_array_equal(fast, slow)


def test_glasses_hiding_the_eyes_is_eyes_small_and_others_pass(reference_maps):
    names = list(reference_maps)
    counts = counts_matrix([class_counts(reference_maps[n]) for n in names])
    kept, reasons, got, need = visibility_reasons([True] * len(names), counts, MIN_PX, 512)
    by_name = dict(zip(names, reasons))
    assert by_name["1321"] == "eyes_small"
    assert all(r == "" for n, r in by_name.items() if n != "1321")
    # 1024x1024 maps: four times the area of 512x512, so four times the 200-pixel rule
    np.testing.assert_allclose(need, 800.0)


def test_threshold_scales_with_area_and_is_strict():
    # a 256x256 image needs > 50 pixels per region: 50 fails, 51 passes
    def row(eyes, brows, lips, area=256 * 256):
        c = [0] * 19
        c[4], c[3], c[12] = eyes, brows, lips
        c[0] = area - eyes - brows - lips
        return c

    counts = counts_matrix([row(51, 51, 51), row(50, 51, 51), row(51, 10, 0), row(51, 51, 51), None])
    kept, reasons, _, need = visibility_reasons([True, True, True, False, False], counts, MIN_PX, 512)
    assert kept.tolist() == [True, False, False, False, False]
    assert reasons == ["", "eyes_small", "brows_small+lips_small", "no_face", "no_face"]
    assert need[0].tolist() == [50.0, 50.0, 50.0]


def test_arrow_column_and_python_lists_agree():
    rows = [[i + j for j in range(19)] for i in range(5)] + [None]
    from_lists = counts_matrix(rows)
    from_arrow = counts_matrix(pa.chunked_array([pa.array(rows[:3]), pa.array(rows[3:])]))
    np.testing.assert_array_equal(from_lists, from_arrow)
    assert from_arrow[-1].sum() == 0
    with pytest.raises(ValueError):
        counts_matrix(pa.array([[1, 2, 3]]))


def test_split_reasons_accepts_both_joiners():
    assert split_reasons("eyes_small+lips_small") == ["eyes_small", "lips_small"]
    assert split_reasons("eyes_small,brows_small") == ["eyes_small", "brows_small"]
    assert split_reasons("") == []


def test_a_parse_error_is_the_reject_reason(reference_maps):
    from stages.filter_masks import decide

    counts = [class_counts(m) for m in reference_maps.values()][:2]
    table = decide(
        ["b", "a"],
        [True, False],
        counts,
        512,
        {"eyes": 200, "brows": 200, "lips": 200},
        errors=["", "corrupt_image: truncated"],
    ).to_pylist()
    by_id = {row["id"]: row for row in table}
    assert by_id["a"]["kept"] is False and by_id["a"]["reason"] == "corrupt_image"
    assert by_id["b"]["reason"] != "corrupt_image"
