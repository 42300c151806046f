"""Image geometry shared by the stages: boxes of masks, face boxes, and square face crops.

Boxes are (x, y, w, h) in image pixels. ROI boxes, crops and the inverse paste live in stages/lib/rois.py, built on
the same conventions.

    from stages.lib.boxes import face_box, face_crop, mask_bbox
    box = mask_bbox(label_map > 0)                 # [x, y, w, h] of the True pixels, or None
    square = face_crop(image, face_box(image, box))  # the judge's and the curator's face square
"""

import math

import cv2
import numpy as np

from .errors import StageError


def mask_bbox(mask: np.ndarray):
    """[x, y, w, h] of the True pixels, or None when there are none."""
    if mask.ndim == 2 and mask.dtype in (np.bool_, np.uint8) and mask.size:
        # OpenCV reads a 2-D uint8 array as an image and boxes its non-zero pixels in one pass (numpy's two any()
        # passes cost 8x more on a 350 px map); bool is the same bytes.
        x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        return [x, y, w, h] if w else None
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def face_box(image, face_bbox):
    """The parser's face box, or the whole image when there is none."""
    if face_bbox is None:
        h, w = image.shape[:2]
        return (0, 0, w, h)
    return face_bbox


def face_crop(image, bbox, margin=0.1) -> np.ndarray:
    """A uint8 square crop centred on the box (x, y, w, h), its side max(w, h) * (1 + 2 * margin), in the image's own
    layout (grey, RGB or a label map).

    Parts outside the image repeat its edge pixels, so a face at the border keeps its shape and scale.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape[:2]:
        raise StageError(f"face_crop wants a non-empty uint8 HxW or HxWxC image, got {image.dtype} {image.shape}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise StageError(f"face_crop wants a bbox (x, y, w, h), got {bbox!r}") from None
    if not (w > 0 and h > 0) or not all(map(math.isfinite, (x, y, w, h))) or margin < 0:
        raise StageError(f"face_crop wants a positive finite bbox and margin >= 0, got {bbox!r}, margin={margin}")
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    left = int(round(x + w / 2 - side / 2))
    top = int(round(y + h / 2 - side / 2))
    rows = np.clip(np.arange(top, top + side), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(left, left + side), 0, image.shape[1] - 1)
    return np.ascontiguousarray(image[np.ix_(rows, cols)])
