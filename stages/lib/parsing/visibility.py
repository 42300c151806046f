"""Is each feature that FaceMesh outlined actually visible in the picture?

FaceMesh places all 478 landmarks on any face it detects, whatever covers it: it draws eyes behind a black bar or
sunglasses and lips behind a hand. A learned parser would label the occluder, not the feature, and the mask-size rule
of filter_masks relies on that. So before the FaceMesh backend hands its label map on, each eye, brow and the mouth
is checked against the pixels under it, and a feature the picture does not show is taken out of the map:

- an eye whose lid landmarks nearly meet is closed: its pixels become skin (1), because a closed lid *is* skin and
  that is what a learned parser labels there;
- an occluded eye, brow or mouth becomes background (0): the pixels show an occluder (a bar, a lens, a hand), which
  is not part of the face, and painting it skin would make a hand count as face skin.

Every measure is on luminance only, so grey pictures (most of FER-style datasets) are judged like colour ones, and
every brightness difference is divided by the median luminance of the face's skin, so exposure does not matter:

- `dark`: how far the darkest pixels of the feature (5th percentile) sit below the skin ring around it. An open eye
  has an iris, pupil and lashes darker than the skin next to it; a bar or lens covers the eye *and* its ring, so
  the two look alike.
- `contrast`: the spread of luminance inside the feature (95th - 5th percentile). Sclera against iris, a brow
  against the skin it grows on, lips and the mouth line: features are not flat, occluders mostly are, and a hand
  over the mouth is as even as the cheek.
- `bright`: how far the brightest pixels of the feature (95th percentile) rise above the skin ring. An open eye shows
  sclera, as bright as the skin or brighter; a closed one shows only lid and lashes.
- the eye's opening: mean lid gap over eye width from the lid landmarks (the eye aspect ratio of blink detection).

The thresholds (VisibilityThresholds) were read off measured distributions; see their comments. bench/visibility.py
prints the rejection rates they give on the demo and on the real photos.
"""

from dataclasses import dataclass

import numpy as np

from ..boxes import mask_bbox
from ..dilation import dilate_ellipse

BACKGROUND, SKIN = 0, 1
EYES = (4, 5)
BROWS = (2, 3)
MOUTH = (11, 12, 13)  # judged as one: the lips and the mouth line or opening between them

# Lid landmarks per eye class: (outer corner, inner corner, three (upper, lower) lid pairs). MediaPipe's indices; the
# subject's left eye (class 4) is MediaPipe's LEFT_EYE set, as in facemesh.py.
LIDS = {
    4: (263, 362, ((385, 380), (386, 374), (387, 373))),
    5: (33, 133, ((160, 144), (159, 145), (158, 153))),
}
MIN_PIXELS = 4  # a feature or ring with fewer pixels cannot be judged, and is kept as drawn
# The skin level divides every measure; a floor keeps a nearly black face (an underexposed photo) from turning sensor
# noise into large ratios.
SKIN_LEVEL_FLOOR = 20.0


@dataclass(frozen=True)
class VisibilityThresholds:
    """A feature is visible when its measures clear these limits (all ratios; see the module docstring).

    Read off the measures of the demo (the first 300 faces at 128 and 160 px, all 600 at 256 px, seed 0) and of 500
    of the real facial_expressions photos (drawn with seed 0); the ranges quoted are per eye, brow or mouth.
    bench/visibility.py prints the rejection rates they give.
    """

    # Eye aspect ratio: closed demo eyes measure 0.044-0.18 at 256 px; open demo eyes >= 0.15 at 128 px and >= 0.22
    # at 160 and 256 px. Real photos below 0.13 were looked at: closed or screwed-up eyes, which the rule means to
    # remove. Below 256 px FaceMesh opens one eye of some closed pairs (to 0.25 at 160 px) and shows it like a dim
    # real eye, so 2 of 9 closed-eye faces at 160 px keep one eye; limits that caught them also closed the
    # squinting eyes of laughing real faces.
    eye_opening: float = 0.13
    # A narrowed eye that shows no sclera is closed too: FaceMesh outlines a thick closed lash line as an eye with an
    # opening up to 0.175 whose `bright` is -0.51. Open demo eyes measure `bright` >= -0.17; on the real photos
    # this pair of limits closes no face's second eye that eye_opening leaves open.
    eye_narrow: float = 0.2
    eye_sclera: float = -0.4
    # An eye flatter than this is covered: bars measure 0.02-0.13, open demo eyes >= 0.16 (>= 0.52 at 160-256 px).
    eye_contrast: float = 0.12
    # A dim eye (contrast below eye_dim) with nothing darker than the skin around it is behind a dark lens: bars
    # and sunglasses (whose highlight lifts contrast to 0.35) have `dark` <= 0.144. Open demo eyes dimmer than 0.4
    # are 2 of 1,896 (both at 128 px); open eyes of dark-skinned faces can have `dark` near 0, but their sclera gives
    # contrast >= 0.5. On the real photos 0.3% of eyes are dim and dark (blur, dark glasses).
    eye_dim: float = 0.4
    eye_dark: float = 0.15
    # Brows: only a noise-flat occluder is caught (no demo defect covers the brows, so the demo cannot score this);
    # demo brows measure >= 0.06, real ones >= 0.08.
    brow_contrast: float = 0.04
    # Mouths behind a hand or a bar measure 0.03-0.14 (0.27 at 128 px); clean demo mouths >= 0.22 (>= 0.29 at
    # 160-256 px), real ones >= 0.17 (>= 0.32 for 98%).
    mouth_contrast: float = 0.2
    # The skin ring's width as a fraction of the distance between the eye centres (0.15: about a third of an eye's
    # width, narrow enough to stay on an occluder that covers the feature, wide enough to hold skin pixels).
    ring: float = 0.15


def luminance(image: np.ndarray) -> np.ndarray:
    """float32 luminance (Rec. 601 weights) of a grey or RGB uint8 image."""
    if image.ndim == 2:
        return image.astype(np.float32)
    return image[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])


def grey_percentiles(pixels: np.ndarray, qs) -> list:
    """np.percentile(pixels.astype(np.float32), qs) of uint8 pixels, as floats, read off their histogram.

    Same numbers as numpy's default (linear) method, the same floating-point steps included: the value at index
    (n - 1) * q / 100 of the sorted pixels, between its two neighbours (tests/test_parse_visibility.py checks this
    against numpy). np.percentile's sort and call overhead, ~50 us even for a few hundred pixels (2-core dev VM,
    2026-12-01), were a third of the check's time on a grey photo once the rings were cheap.
    """
    n = pixels.size
    cumulative = np.cumsum(np.bincount(pixels.ravel(), minlength=256))
    out = []
    for q in qs:
        virtual = (n - 1) * (q / 100)
        low = int(virtual)  # floor: virtual >= 0; at the top (virtual = n - 1) both neighbours are the last value
        a, b = (float(v) for v in np.searchsorted(cumulative, [low + 1, min(low + 2, n)]))
        t = virtual - low
        out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))
    return out


def spread(values: np.ndarray):
    """(5th, 95th percentile) of luminance values: float luminance, or a grey image's own uint8 values."""
    if values.dtype == np.uint8:
        return tuple(grey_percentiles(values, (5, 95)))
    return tuple(np.percentile(values, [5, 95]))


def median(values: np.ndarray) -> float:
    """np.median of luminance values as a float (for uint8 values the 50th percentile is the same number)."""
    if values.dtype == np.uint8:
        return grey_percentiles(values, (50,))[0]
    return float(np.median(values))


def eye_opening(points: np.ndarray, eye_class: int) -> float:
    """Mean vertical lid gap over the corner-to-corner width of one eye, from landmarks in pixels."""
    outer, inner, pairs = LIDS[eye_class]
    width = float(np.linalg.norm(points[outer] - points[inner]))
    gap = np.mean([np.linalg.norm(points[up] - points[low]) for up, low in pairs])
    return float(gap / width) if width > 0 else 0.0


def eye_distance(points: np.ndarray) -> float:
    """Distance between the two eye centres (midpoints of each eye's corners), in pixels."""
    centres = [(points[LIDS[c][0]] + points[LIDS[c][1]]) / 2 for c in EYES]
    return float(np.linalg.norm(centres[0] - centres[1]))


def window(mask: np.ndarray, pad: int):
    """Slices of the mask's bounding box grown by `pad` pixels, clipped to the image; None when the mask is empty."""
    box = mask_bbox(mask)
    if box is None:
        return None
    x, y, w, h = box
    rows, cols = mask.shape
    return slice(max(y - pad, 0), min(y + h + pad, rows)), slice(max(x - pad, 0), min(x + w + pad, cols))


def class_mask(label_map: np.ndarray, classes) -> np.ndarray:
    """Boolean mask of the pixels holding any of `classes`: np.isin's answer, without its sort of the whole map."""
    mask = label_map == classes[0]
    for cls in classes[1:]:
        mask |= label_map == cls
    return mask


def ring_around(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels within `width` of the mask but outside it: dilate_ellipse (exactly cv2.dilate with the elliptic
    element of side 2 * width + 1, nothing outside the array) minus the mask."""
    return dilate_ellipse(mask, width) & ~mask


def measure(lum: np.ndarray, feature: np.ndarray, skin: np.ndarray, ring_px: int, skin_level: float):
    """{'dark', 'bright', 'contrast'} of one feature (boolean mask) against the skin ring around it.

    `lum`: luminance (float), or a grey image's own uint8 pixels, whose percentiles are cheaper (grey_percentiles).
    None when the feature or its ring has too few pixels to judge.

    Only the feature's window is touched, so the cost follows the feature's size, not the image's.
    """
    box = window(feature, ring_px + 1)
    if box is None:
        return None
    inside = feature[box]
    ring = ring_around(inside, ring_px) & skin[box]
    if np.count_nonzero(inside) < MIN_PIXELS or np.count_nonzero(ring) < MIN_PIXELS:
        return None
    p5, p95 = spread(lum[box][inside])
    skin_near = median(lum[box][ring])
    return {
        "dark": (skin_near - p5) / skin_level,
        "bright": (p95 - skin_near) / skin_level,
        "contrast": float(p95 - p5) / skin_level,
    }


def eye_replacement(opening: float, m, limits: VisibilityThresholds):
    """SKIN for a closed eye, BACKGROUND for a covered one, None for a visible one (m: its measures, or None)."""
    no_sclera = m is not None and m["bright"] < limits.eye_sclera
    if opening < limits.eye_opening or (opening < limits.eye_narrow and no_sclera):
        return SKIN
    if m is not None and (
        m["contrast"] < limits.eye_contrast or (m["contrast"] < limits.eye_dim and m["dark"] < limits.eye_dark)
    ):
        return BACKGROUND
    return None


def hidden_features(image: np.ndarray, points: np.ndarray, label_map: np.ndarray, limits: VisibilityThresholds):
    """{class id: replacement id} for each drawn feature the image does not show (see the module docstring).

    `points` are the landmarks in pixels, `label_map` the FaceMesh map drawn from them. The mouth is judged as one
    region and, when hidden, all three of its classes go.
    """
    skin = label_map == SKIN
    if np.count_nonzero(skin) < MIN_PIXELS:
        return {}
    # A grey image's luminance is its own values; kept as uint8, its percentiles are read off histograms.
    lum = image if image.ndim == 2 and image.dtype == np.uint8 else luminance(image)
    skin_level = max(median(lum[skin]), SKIN_LEVEL_FLOOR)
    ring_px = max(1, round(limits.ring * eye_distance(points)))

    def measured(classes):
        return measure(lum, class_mask(label_map, classes), skin, ring_px, skin_level)

    hidden = {}
    for cls in EYES:
        opening = eye_opening(points, cls)
        # An eye this shut is closed whatever its pixels show (eye_replacement), so they are not measured.
        m = None if opening < limits.eye_opening else measured((cls,))
        replacement = eye_replacement(opening, m, limits)
        if replacement is not None:
            hidden[cls] = replacement
    for cls in BROWS:
        m = measured((cls,))
        if m is not None and m["contrast"] < limits.brow_contrast:
            hidden[cls] = BACKGROUND
    m = measured(MOUTH)
    if m is not None and m["contrast"] < limits.mouth_contrast:
        hidden.update({cls: BACKGROUND for cls in MOUTH})
    return hidden


def remove_hidden(label_map: np.ndarray, hidden: dict) -> np.ndarray:
    """The label map with each hidden class's pixels set to its replacement (in place; also returned)."""
    for cls, replacement in hidden.items():
        label_map[label_map == cls] = replacement
    return label_map
