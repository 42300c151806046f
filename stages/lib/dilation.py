"""Dilation of a boolean mask by OpenCV's elliptic structuring element, at a cost that does not grow with its area.

    grown = dilate_ellipse(mask, width)     # == cv2.dilate(mask, MORPH_ELLIPSE of side 2 * width + 1) as bool

Two callers grow regions by wide ellipses: the visibility check's skin ring around an eye or a mouth
(parsing/visibility.py) and the paste region of an ROI, grown by a fraction of its width (rois.region_mask: 40 % of a
mouth is a 40 px radius on a 350 px photo). OpenCV's dilation makes a pass per element pixel, so its cost follows
the element's area; above a small element the runs of each row are widened instead, at the same pixels
(tests/test_parse_visibility.py checks both paths against cv2.dilate).
"""

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=None)
def ellipse_half_widths(width: int) -> np.ndarray:
    """Half-width of each row of OpenCV's elliptic structuring element of side 2 * width + 1, top row first.

    Each row of that element is one run of ones centred on its middle column; dilate_ellipse is built from these
    half-widths, so it is checked here rather than assumed.
    """
    side = 2 * width + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)).astype(bool)
    half = (kernel.sum(axis=1) - 1) // 2
    cols = np.arange(side)
    if not np.array_equal(kernel, np.abs(cols[None, :] - width) <= half[:, None]):
        raise ValueError(f"OpenCV's elliptic element of side {side} is not rows of centred runs")
    half.flags.writeable = False  # shared by every caller through the cache
    return half


# Below this many (window pixels x element pixels), OpenCV's dilation, a pass per element pixel, is cheaper than the
# run bookkeeping of the other path. An eye's window at a 6 px ring (the demo's): 7 vs 28 us; at 19 px (a 350 px
# photo's): 164 vs 56 us; at 25 px: 1,190 vs 74 us (2-core dev VM, 2026-12-01).
OPENCV_DILATION_WORK = 250_000


def dilate_ellipse(mask: np.ndarray, width: int) -> np.ndarray:
    """Boolean: the pixels within the elliptic element of side 2 * width + 1 of a mask pixel, exactly cv2.dilate's
    answer with nothing outside the array.

    For all but small elements each run of mask pixels in a row is widened by the element's row half-widths onto
    the rows around it, and the widened runs are painted with one cumulative sum: the cost follows the runs and the
    array, not the element's area.
    """
    side = 2 * width + 1
    if mask.size * side * side <= OPENCV_DILATION_WORK:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
        return cv2.dilate(mask.view(np.uint8), element).view(bool)
    rows, cols = mask.shape
    span = cols + 2  # a zero column either side, so that every run starts and ends inside its own row
    padded = np.zeros((rows, span), np.int8)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    edges = flat[1:] - flat[:-1]  # at flat index row * span + col: +1 where a run starts at col, -1 just past its end
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    offsets = np.arange(-width, width + 1)
    target_rows = starts[:, None] // span + offsets
    on_array = (target_rows >= 0) & (target_rows < rows)
    half = ellipse_half_widths(width)
    lo = starts[:, None] + offsets * span - np.minimum(half, (starts % span)[:, None])
    hi = stops[:, None] + offsets * span + np.minimum(half, cols - (stops % span)[:, None])
    paint = np.bincount(lo[on_array], minlength=rows * span)
    paint -= np.bincount(hi[on_array], minlength=rows * span)
    # Each widened run starts and ends in one row, so a running sum over the flat array restarts at 0 every row.
    return (np.cumsum(paint) > 0).reshape(rows, span)[:, :cols]
