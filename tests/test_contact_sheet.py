"""Contact sheets: grid geometry, determinism, and the tinted region overlay."""

import numpy as np
import pytest
from PIL import Image

from stages.lib.contact_sheet import contact_sheet, overlay_regions, render_sheet


def test_grid_geometry_and_byte_identical_rerun(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 30), np.uint8) for _ in range(5)] + [
        rng.integers(0, 255, (20, 50, 3), np.uint8)
    ]
    captions = [f"face {i} with a caption far too long for the cell" for i in range(6)]
    a = contact_sheet(images, captions, str(tmp_path / "a.png"), cols=4, thumb=32)
    b = contact_sheet(images, captions, str(tmp_path / "b.png"), cols=4, thumb=32)
    sheet = Image.open(a)
    assert sheet.size == (4 * 36, 2 * (36 + 12))
    assert open(a, "rb").read() == open(b, "rb").read()
    # the first cell holds the first image, scaled, not a blank
    assert np.asarray(sheet)[2:34, 8:28].std() > 10


def test_empty_sheet_and_bad_arguments():
    assert render_sheet([], []).size[0] > 0
    with pytest.raises(ValueError):
        render_sheet([np.zeros((4, 4), np.uint8)], [])


def test_overlay_tints_only_the_region():
    img = np.full((10, 10), 100, np.uint8)
    lm = np.zeros((10, 10), np.uint8)
    lm[2, 3] = 4  # l_eye
    out = overlay_regions(img, lm)
    assert out.shape == (10, 10, 3)
    assert tuple(out[2, 3]) != (100, 100, 100) and tuple(out[0, 0]) == (100, 100, 100)
