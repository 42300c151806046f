"""The embedded demo dataset: procedurally drawn faces with recorded ground truth and injected defects.

A fresh clone runs the whole pipeline offline on these. The faces are painted with numpy and OpenCV (shaded skin,
hair, ears, neck, eyes with lids/iris/pupil, nose with nostrils, two-tone lips) so that MediaPipe FaceMesh finds
them and the mini-Xception judge reads their expression. Each sample also carries the truth (drawn emotion, label
noise, defect, face box) that tests use to score the filters; the pipeline itself never reads the truth.

Use:
    from stages.lib.demo_faces import render_demo, DEFECTS
    for sample in render_demo(n=600, size=256, seed=0):
        sample.image, sample.label, sample.truth
See the faces: `python bench/demo_faces.py --sheet docs/demo_faces.png` (also measures speed, FaceMesh, judge).

Determinism: sample i depends only on (i, size, seed), never on n, so `render_demo(100)` is the first 100 of
`render_demo(600)`. Emotions, label noise and defects are dealt from a shuffled deck per block of `BLOCK` samples,
so the rates are exact on whole blocks and close on any prefix.
"""
import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

DEFECTS = ("none", "mouth_occluded", "eyes_occluded", "sunglasses", "eyes_closed", "too_small", "cut_off",
           "non_face", "duplicate")

# One deck per block of BLOCK samples. Counts are per block.
BLOCK = 300
EMOTION_DECK = {"neutral": 126, "happy": 126, "sad": 24, "surprise": 24}
DEFECT_DECK = {"mouth_occluded": 12, "eyes_occluded": 9, "sunglasses": 9, "eyes_closed": 9, "too_small": 9,
               "cut_off": 9, "non_face": 5, "duplicate": 1}
# Label noise is put on defect-free faces only, so that each reject has exactly one cause to score.
NOISE_HAPPY_AS_NEUTRAL = 22
NOISE_NEUTRAL_AS_HAPPY = 8
GREY_FRACTION = 0.05  # a few single-channel images, as real datasets mix them

# Face geometry is in "face units": 1 = half the face width at the cheekbones; the origin is between the eyes.
EYE_X, EYE_HALF_W = 0.42, 0.2
BROW_Y = -0.30
NOSE_TIP_Y, NOSTRIL_Y = 0.56, 0.64
MOUTH_Y = 0.95
CHIN_Y = 1.55
CRANIUM_TOP = -1.62
# The face box (truth.face_bbox) spans cheek to cheek and hairline to chin, like a FER-style face crop.
BOX_TOP, BOX_BOTTOM, BOX_HALF_W = -1.05, CHIN_Y + 0.05, 1.02


@dataclass(frozen=True)
class DemoSample:
    image: np.ndarray  # uint8 HxWx3 RGB, or HxW grey for a few
    label: str         # the label given to the pipeline (may be noisy), canonical spelling
    truth: dict        # true_emotion (None for non-faces), label_noise, defect, face_bbox (x, y, w, h) or None,
    #                    duplicate_of (the index of the original, for duplicates; else None)


@dataclass(frozen=True)
class _Slot:
    emotion: str
    label: str
    label_noise: bool
    defect: str


# ---------------------------------------------------------------------------------------------------------- plan

def _block_plan(seed: int, block: int) -> list:
    """The BLOCK slots of one block: emotion, given label, noise and defect, shuffled by (seed, block)."""
    rng = np.random.default_rng([seed, block, 101])
    emotions = [e for e, k in EMOTION_DECK.items() for _ in range(k)]
    defects = [d for d, k in DEFECT_DECK.items() for _ in range(k)]
    defects += ["none"] * (BLOCK - len(defects))
    emotions = [emotions[j] for j in rng.permutation(BLOCK)]
    defects = [defects[j] for j in rng.permutation(BLOCK)]
    if block == 0 and defects[0] == "duplicate":  # the very first sample has nothing to duplicate
        k = defects.index("none")
        defects[0], defects[k] = defects[k], defects[0]
    labels, noise = list(emotions), [False] * BLOCK
    clean = [j for j in rng.permutation(BLOCK) if defects[j] == "none"]
    flips = ([j for j in clean if emotions[j] == "happy"][:NOISE_HAPPY_AS_NEUTRAL]
             + [j for j in clean if emotions[j] == "neutral"][:NOISE_NEUTRAL_AS_HAPPY])
    for j in flips:
        labels[j] = "neutral" if emotions[j] == "happy" else "happy"
        noise[j] = True
    return [_Slot(emotions[j], labels[j], noise[j], defects[j]) for j in range(BLOCK)]


_PLAN_CACHE: dict = {}


def _slot(seed: int, index: int) -> _Slot:
    key = (seed, index // BLOCK)
    if key not in _PLAN_CACHE:
        if len(_PLAN_CACHE) > 64:
            _PLAN_CACHE.clear()
        _PLAN_CACHE[key] = _block_plan(*key)
    return _PLAN_CACHE[key][index % BLOCK]


# ------------------------------------------------------------------------------------------------------- public

def render_demo(n: int = 600, size: int = 256, seed: int = 0) -> Iterator[DemoSample]:
    """Yield n demo samples of size x size pixels; the same (size, seed) always gives the same sample i."""
    if n < 0 or size < 32:
        raise ValueError(f"render_demo wants n >= 0 and size >= 32, got n={n}, size={size}")
    for i in range(n):
        yield demo_sample(i, size, seed)


def demo_sample(index: int, size: int = 256, seed: int = 0) -> DemoSample:
    """Sample `index` of the demo stream, rendered on its own."""
    slot = _slot(seed, index)
    rng = np.random.default_rng([seed, index, 202])
    if slot.defect == "duplicate":
        source = _duplicate_source(seed, index)
        original = demo_sample(source, size, seed)
        truth = dict(original.truth, defect="duplicate", duplicate_of=source)
        return DemoSample(original.image.copy(), original.label, truth)
    if slot.defect == "non_face":
        image, box = _draw_non_face(rng, size), None
    else:
        image, box = _draw_portrait(rng, size, slot.emotion, slot.defect)
    if rng.random() < GREY_FRACTION:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return DemoSample(image, slot.label, dict(_truth(slot), face_bbox=box))


def demo_plan(n: int = 600, seed: int = 0) -> list:
    """What `render_demo(n, seed=seed)` will draw, without drawing it: per sample a dict of `label` and the truth
    fields `true_emotion, label_noise, defect, duplicate_of` (no face box: that needs the drawing)."""
    plan = []
    for i in range(n):
        slot = _slot(seed, i)
        if slot.defect == "duplicate":
            source = _duplicate_source(seed, i)
            row = dict(plan[source], defect="duplicate", duplicate_of=source)
        else:
            row = dict(_truth(slot), label=slot.label)
        plan.append(row)
    return plan


def _truth(slot: _Slot) -> dict:
    return {"true_emotion": None if slot.defect == "non_face" else slot.emotion, "label_noise": slot.label_noise,
            "defect": slot.defect, "duplicate_of": None}


def _duplicate_source(seed: int, index: int) -> int:
    """The earlier sample that duplicate `index` copies: an original (itself no duplicate), so chains stay short."""
    rng = np.random.default_rng([seed, index, 303])
    while True:
        source = int(rng.integers(0, index))
        if _slot(seed, source).defect != "duplicate":
            return source


# ---------------------------------------------------------------------------------------------------- painting

class _Canvas:
    """A float RGB image plus the pixel grid in face units, so shapes can be painted as implicit soft masks."""

    def __init__(self, rgb: np.ndarray, center, scale: float, roll: float):
        self.rgb = rgb
        self.h, self.w = rgb.shape[:2]
        self.cx, self.cy = center
        self.scale = scale
        self.cos, self.sin = math.cos(roll), math.sin(roll)
        ys, xs = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        dx, dy = xs - self.cx, ys - self.cy
        self.u = (self.cos * dx + self.sin * dy) / scale
        self.v = (-self.sin * dx + self.cos * dy) / scale

    def to_px(self, pts) -> np.ndarray:
        """Face-unit points (N, 2) to pixel coordinates (N, 2)."""
        pts = np.asarray(pts, np.float64) * self.scale
        x = self.cos * pts[:, 0] - self.sin * pts[:, 1] + self.cx
        y = self.sin * pts[:, 0] + self.cos * pts[:, 1] + self.cy
        return np.stack([x, y], axis=1)

    def edge(self, dist, soft_px=1.0) -> np.ndarray:
        """An anti-aliased coverage mask from a signed distance in face units (negative inside)."""
        return np.clip(0.5 - dist * (self.scale / soft_px), 0.0, 1.0)

    def ellipse(self, x0, y0, rx, ry, soft_px=1.0) -> np.ndarray:
        win = self._window(x0, y0, rx, ry, soft_px / self.scale + 1.5 / self.scale)
        out = np.zeros((self.h, self.w), np.float32)
        if win is not None:
            r = np.sqrt(((self.u[win] - x0) / rx) ** 2 + ((self.v[win] - y0) / ry) ** 2)
            out[win] = self.edge((r - 1.0) * min(rx, ry), soft_px)
        return out

    def blob(self, x0, y0, rx, ry) -> np.ndarray:
        """A Gaussian bump for shading: 1 at the centre, e^-1/2 at one radius, cut where it falls below 1e-3."""
        out = np.zeros((self.h, self.w), np.float32)
        win = self._window(x0, y0, 3.72 * rx, 3.72 * ry, 0.0)
        if win is not None:
            out[win] = np.exp(-0.5 * (((self.u[win] - x0) / rx) ** 2 + ((self.v[win] - y0) / ry) ** 2))
        return out

    def _window(self, x0, y0, rx, ry, pad):
        """Pixel slices covering the face-unit box centre (x0, y0), half-sides rx + pad, ry + pad (any roll)."""
        corners = self.to_px([(x0 + sx * (rx + pad), y0 + sy * (ry + pad)) for sx in (-1, 1) for sy in (-1, 1)])
        (c0, r0), (c1, r1) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int) + 1
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, self.w), min(r1, self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def polygon(self, pts, blur_px=0.0) -> np.ndarray:
        """Coverage of a filled polygon given in face units, drawn with sub-pixel precision."""
        mask = np.zeros((self.h, self.w), np.uint8)
        px = np.round(self.to_px(pts) * 16).astype(np.int32)
        cv2.fillPoly(mask, [px], 255, cv2.LINE_AA, shift=4)
        return _blurred(mask, blur_px)

    def stroke(self, pts, width, blur_px=0.0) -> np.ndarray:
        """Coverage of a polyline in face units, `width` in face units."""
        mask = np.zeros((self.h, self.w), np.uint8)
        px = np.round(self.to_px(pts) * 16).astype(np.int32)
        thick = max(1, int(round(width * self.scale)))
        cv2.polylines(mask, [px], False, 255, thick, cv2.LINE_AA, shift=4)
        return _blurred(mask, blur_px)

    def paint(self, mask, colour, opacity=1.0):
        """Alpha-blend `colour` (RGB triple or HxWx3) over the image where `mask` covers it."""
        win = _window(mask)
        if win is None:
            return
        m = (mask[win] * opacity)[..., None]
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 3:
            colour = colour[win]
        self.rgb[win] = self.rgb[win] * (1.0 - m) + m * colour

    def shade(self, mask, factor):
        """Multiply the image by `factor` where mask covers it: < 1 darkens (shadow), > 1 lightens."""
        win = _window(mask)
        if win is not None:
            self.rgb[win] *= (1.0 + (factor - 1.0) * mask[win])[..., None]


def _window(mask, floor=1e-3):
    """The smallest row/column slices holding every pixel of `mask` above `floor`; painting only there is the
    difference between a few and many milliseconds per face part."""
    on = mask > floor
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _blurred(mask_u8, blur_px):
    m = mask_u8.astype(np.float32) / 255.0
    if blur_px > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur_px)
    return m


def _curve(f, x0, x1, n=24):
    xs = np.linspace(x0, x1, n)
    return np.stack([xs, f(xs)], axis=1)


def _mix(a, b, t):
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


# ---------------------------------------------------------------------------------------------------- the look

SKIN_TONES = [(242, 208, 185), (226, 184, 152), (200, 150, 115), (160, 110, 80), (118, 78, 56), (88, 58, 42)]
HAIR_COLOURS = [(28, 22, 20), (60, 40, 28), (100, 66, 40), (170, 130, 80), (120, 56, 30), (140, 138, 135)]
IRIS_COLOURS = [(70, 45, 30), (100, 70, 40), (60, 100, 140), (80, 110, 70), (40, 30, 25)]


@dataclass
class _Look:
    """Everything random about one person and one photo, apart from the expression."""
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    face_w: float       # face width relative to height
    jaw: float          # superellipse exponent of the jaw: larger is squarer
    hairline: float
    long_hair: bool
    light: np.ndarray   # unit light direction in face space (x right, y down, z towards the camera)
    ambient: float
    gaze: tuple
    eye_open: float
    brow_thick: float
    lip_full: float
    nose_w: float
    cloth: np.ndarray


CLOTH_COLOURS = [(60, 70, 110), (140, 40, 40), (50, 90, 60), (200, 200, 200), (40, 40, 45), (150, 120, 70)]


def _random_look(rng) -> _Look:
    skin = _mix(*_pick_pair(rng, SKIN_TONES), rng.random())
    lx, ly = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.1)
    light = np.array([lx, ly, 1.0]) / math.sqrt(lx * lx + ly * ly + 1.0)
    lips = skin * np.array([0.78, 0.52, 0.52]) + np.array([40, 10, 14]) * rng.uniform(0.5, 1.0)
    return _Look(skin=skin, hair=np.asarray(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], np.float32)
                 * rng.uniform(0.8, 1.15),
                 iris=np.asarray(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], np.float32),
                 lips=np.clip(lips, 0, 255), face_w=rng.uniform(0.9, 1.06), jaw=rng.uniform(1.7, 2.6),
                 hairline=rng.uniform(-1.15, -0.95), long_hair=bool(rng.random() < 0.4), light=light,
                 ambient=rng.uniform(0.45, 0.65), gaze=(rng.uniform(-0.03, 0.03), rng.uniform(-0.015, 0.015)),
                 eye_open=rng.uniform(0.9, 1.1), brow_thick=rng.uniform(0.055, 0.085),
                 lip_full=rng.uniform(0.85, 1.2), nose_w=rng.uniform(0.9, 1.15),
                 cloth=np.asarray(CLOTH_COLOURS[rng.integers(len(CLOTH_COLOURS))], np.float32))


def _pick_pair(rng, palette):
    k = int(rng.integers(len(palette) - 1))
    return palette[k], palette[k + 1]


@dataclass
class _Expression:
    mouth_w: float      # half-width of the mouth
    corner: float       # how far the mouth corners rise (negative: fall)
    open_up: float      # mouth opening above the lip line
    open_down: float    # and below it
    round_mouth: bool   # an "O" rather than a smile-shaped opening
    teeth: bool
    eye_upper: float    # eye opening above and below its axis
    eye_lower: float
    brow_raise: float
    brow_inner: float   # extra rise of the brow's inner end (sad)
    cheeks: float       # raised-cheek highlight and crinkles, 0..1
    folds: float        # nasolabial fold strength, 0..1


def _expression(rng, emotion: str) -> _Expression:
    if emotion == "happy":
        open_smile = rng.random() < 0.75
        return _Expression(mouth_w=rng.uniform(0.42, 0.5), corner=rng.uniform(0.13, 0.2),
                           open_up=rng.uniform(0.0, 0.02) if open_smile else 0.0,
                           open_down=rng.uniform(0.1, 0.17) if open_smile else 0.0, round_mouth=False,
                           teeth=open_smile, eye_upper=rng.uniform(0.07, 0.085), eye_lower=rng.uniform(0.015, 0.03),
                           brow_raise=rng.uniform(-0.02, 0.02), brow_inner=0.0, cheeks=rng.uniform(0.7, 1.0),
                           folds=rng.uniform(0.7, 1.0))
    if emotion == "sad":
        return _Expression(mouth_w=rng.uniform(0.28, 0.33), corner=-rng.uniform(0.11, 0.15), open_up=0.0,
                           open_down=0.0, round_mouth=False, teeth=False, eye_upper=rng.uniform(0.07, 0.085),
                           eye_lower=rng.uniform(0.045, 0.055), brow_raise=0.0, brow_inner=rng.uniform(0.1, 0.14),
                           cheeks=0.0, folds=0.0)
    if emotion == "surprise":
        return _Expression(mouth_w=rng.uniform(0.16, 0.2), corner=0.0, open_up=rng.uniform(0.09, 0.12),
                           open_down=rng.uniform(0.15, 0.2), round_mouth=True, teeth=False,
                           eye_upper=rng.uniform(0.13, 0.15), eye_lower=rng.uniform(0.075, 0.09),
                           brow_raise=rng.uniform(0.12, 0.16), brow_inner=0.0, cheeks=0.0, folds=0.0)
    return _Expression(mouth_w=rng.uniform(0.32, 0.37), corner=rng.uniform(-0.01, 0.015), open_up=0.0, open_down=0.0,
                       round_mouth=False, teeth=False, eye_upper=rng.uniform(0.095, 0.11),
                       eye_lower=rng.uniform(0.055, 0.065), brow_raise=0.0, brow_inner=0.0, cheeks=0.0, folds=0.0)


# ------------------------------------------------------------------------------------------------------ portrait

def _draw_portrait(rng, size: int, emotion: str, defect: str):
    """A face photo of `emotion` with `defect` painted in; returns (uint8 RGB, face box or None)."""
    look, expr = _random_look(rng), _expression(rng, emotion)
    if defect == "eyes_closed":
        expr.eye_upper, expr.eye_lower = 0.0, 0.0
    scale, center = _placement(rng, size, defect)
    roll = math.radians(rng.uniform(-9, 9))
    canvas = _Canvas(_background(rng, size), center, scale, roll)
    _paint_body(canvas, look)
    _paint_head(canvas, look)
    _paint_eyes(canvas, look, expr)
    _paint_brows(canvas, look, expr)
    _paint_nose(canvas, look)
    _paint_mouth(canvas, look, expr)
    _paint_cheeks(canvas, look, expr)
    _paint_fringe(canvas, look, rng)
    _paint_defect(canvas, look, defect, rng)
    image = _finish(canvas.rgb, rng)
    return image, _face_box(canvas, size)


def _placement(rng, size, defect):
    """Face scale (pixels per face unit) and centre, by defect: tiny faces, faces half out of the frame."""
    if defect == "too_small":
        scale = size * rng.uniform(0.035, 0.05)
        return scale, (size * rng.uniform(0.2, 0.8), size * rng.uniform(0.2, 0.8))
    scale = size * rng.uniform(0.17, 0.22)
    if defect == "cut_off":
        side = rng.integers(4)
        off = rng.uniform(0.0, 0.15) * size
        pos = [(off, size / 2), (size - off, size / 2), (size / 2, off), (size / 2, size - off)][side]
        return scale, (pos[0] + rng.uniform(-8, 8), pos[1] + rng.uniform(-8, 8))
    jitter = size * 0.06
    return scale, (size / 2 + rng.uniform(-jitter, jitter), size * 0.48 + rng.uniform(-jitter, jitter))


def _background(rng, size):
    """A smooth two-colour gradient with a few soft blobs, like an out-of-focus room or studio backdrop.

    It has no detail finer than a tenth of the image, so it is drawn at 32x32 and scaled up: the same picture
    for a fraction of the time."""
    low = 32
    a, b = rng.uniform(30, 230, 3).astype(np.float32), rng.uniform(30, 230, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = (np.mgrid[0:low, 0:low].astype(np.float32) + 0.5) / low
    t = np.clip(0.5 + (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle), 0, 1)[..., None]
    rgb = a * (1 - t) + b * t
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
        w = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))[..., None] * np.float32(rng.uniform(0.2, 0.5))
        rgb = rgb * (1 - w) + w * rng.uniform(20, 240, 3).astype(np.float32)
    return cv2.resize(rgb.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _skin_shading(canvas, look, x0=0.0, y0=-0.1, rx=1.0, ry=1.7):
    """Lambert shading of the head as an ellipsoid: per-pixel skin colour lit from `look.light`."""
    nu = np.clip((canvas.u - x0) / (rx * look.face_w * 1.05), -1, 1)
    nv = np.clip((canvas.v - y0) / ry, -1, 1)
    nz = np.sqrt(np.clip(1.0 - nu * nu - nv * nv, 0.0, 1.0))
    lam = np.clip(nu * look.light[0] + nv * look.light[1] + nz * look.light[2], 0, 1)
    shade = look.ambient + (1.05 - look.ambient) * lam
    return look.skin[None, None, :] * shade[..., None]


def _head_outline(look, n=64):
    """Closed outline of the face: a round cranium on top, a superellipse jaw below the cheekbones."""
    w = look.face_w
    top = [(w * math.cos(t), CRANIUM_TOP * math.sin(t)) for t in np.linspace(0, math.pi, n // 2)]
    jaw = [(w * (1 - t ** look.jaw) ** (1 / look.jaw), CHIN_Y * t) for t in np.linspace(0, 1, n // 2)]
    left_jaw = [(-x, y) for x, y in jaw]
    # from the right cheek over the top to the left cheek, down the left jaw to the chin, back up the right jaw
    return np.array(top + left_jaw + jaw[::-1])


def _paint_body(canvas, look):
    """Hair behind the head, the neck, shoulders in clothes, and the ears."""
    if look.long_hair:  # hair falling behind the head down to the shoulders
        back = canvas.ellipse(0, -0.3, look.face_w * 1.3, 2.1, soft_px=2.0) * canvas.edge(canvas.v - 1.7, 3.0)
        canvas.paint(back, _hair_colour(canvas, look) * 0.8)
    canvas.paint(canvas.polygon([(-2.6, 3.6), (-2.2, 2.25), (-0.6, 1.95), (0.6, 1.95), (2.2, 2.25), (2.6, 3.6)],
                                blur_px=1.0), look.cloth)
    neck = canvas.polygon([(-0.5, 0.6), (0.5, 0.6), (0.55, 2.15), (0, 2.3), (-0.55, 2.15)])
    canvas.paint(neck, _skin_shading(canvas, look, y0=1.4, rx=0.6, ry=1.2) * 0.8)
    canvas.shade(canvas.blob(0, 1.7, 0.6, 0.2) * neck, 0.65)  # the chin's shadow on the neck
    for side in (-1, 1):
        ear = canvas.ellipse(side * look.face_w * 1.0, 0.15, 0.16, 0.32)
        canvas.paint(ear, look.skin * 0.85)
        canvas.shade(canvas.ellipse(side * look.face_w * 1.02, 0.15, 0.08, 0.2, soft_px=2.0), 0.7)


def _paint_head(canvas, look):
    face = _face_mask(canvas, look)
    canvas.paint(face, _skin_shading(canvas, look))
    # hair cap over the cranium, down to the hairline, which dips at the temples; beside the head it stops
    # softly above the ears
    cap = canvas.ellipse(0, -0.35, look.face_w * 1.1, 1.4, soft_px=1.5)
    hairline = look.hairline + 0.55 * (canvas.u / look.face_w) ** 2
    on_forehead = canvas.edge(canvas.v - hairline, soft_px=2.0) * face
    beside = (1.0 - face) * canvas.edge(canvas.v + 0.15, soft_px=4.0)
    canvas.paint(cap * np.maximum(on_forehead, beside), _hair_colour(canvas, look))
    canvas.shade(face * canvas.blob(0, look.hairline + 0.12, 0.9, 0.08), 0.85)  # the hair's shadow
    # darken the rim of the face so it reads as round
    rim = face * (1.0 - canvas.ellipse(0, -0.05, look.face_w * 0.9, 1.45, soft_px=12.0))
    canvas.shade(rim, 0.8)


def _hair_colour(canvas, look):
    """Per-pixel hair colour: fine strands and a sheen on the side facing the light."""
    strands = 0.9 + 0.1 * np.sin(canvas.u * 90 + np.sin(canvas.v * 5) * 6) * np.sin(canvas.v * 23 + canvas.u * 4)
    sheen = 1.0 + 0.35 * canvas.blob(0.5 * look.light[0], -1.3, 0.5, 0.25)
    return look.hair[None, None, :] * (strands * sheen)[..., None]


def _paint_eyes(canvas, look, expr):
    for side in (-1, 1):
        cx = side * EYE_X
        canvas.shade(canvas.blob(cx, -0.04, 0.26, 0.15), 0.8)  # eye socket
        if expr.eye_upper <= 0:
            _closed_eye(canvas, cx, side)
        else:
            _open_eye(canvas, look, expr, cx, side)


def _lid_curves(cx, side, up, low):
    """Upper and lower lid as functions of x: arcs that meet at the eye corners, the upper one peaking inward."""
    def t(x):
        return np.clip((x - cx) / EYE_HALF_W, -1, 1)

    def upper(x):
        tt = t(x)
        return -up * (1 - tt ** 2) * (1 - 0.15 * side * tt)

    def lower(x):
        tt = t(x)
        return low * (1 - tt ** 2) * (1 + 0.1 * side * tt)
    return upper, lower


def _open_eye(canvas, look, expr, cx, side):
    up, low = expr.eye_upper * look.eye_open, expr.eye_lower
    upper, lower = _lid_curves(cx, side, up, low)
    x0, x1 = cx - EYE_HALF_W, cx + EYE_HALF_W
    shape = np.concatenate([_curve(upper, x0, x1), _curve(lower, x1, x0)])
    white = canvas.polygon(shape)
    canvas.paint(white, (235, 232, 228))
    canvas.shade(white * canvas.blob(cx, -up, EYE_HALF_W, up * 0.8), 0.75)  # the lid's shadow on the eyeball
    ix, iy = cx + look.gaze[0], look.gaze[1] - 0.005
    iris = canvas.ellipse(ix, iy, 0.085, 0.085) * white
    canvas.paint(iris, look.iris)
    canvas.shade(canvas.ellipse(ix, iy, 0.085, 0.085, soft_px=3) * white * (1 - canvas.ellipse(ix, iy, 0.06, 0.06,
                                                                                                 soft_px=3)), 0.7)
    canvas.paint(canvas.ellipse(ix, iy, 0.037, 0.037) * white, (12, 10, 10))
    canvas.paint(canvas.ellipse(ix + 0.025, iy - 0.03, 0.014, 0.014) * white, (250, 250, 250), 0.9)
    lash = _curve(upper, x0 - 0.02, x1 + 0.02)
    canvas.paint(canvas.stroke(lash, 0.035), (25, 18, 16))
    crease = _curve(lambda x: upper(x) - 0.06 - 0.02 * (1 - ((x - cx) / EYE_HALF_W) ** 2), x0 + 0.02, x1)
    canvas.shade(canvas.stroke(crease, 0.02, blur_px=0.8), 0.7)
    canvas.shade(canvas.stroke(_curve(lower, x0 + 0.03, x1 - 0.01), 0.018, blur_px=0.6), 0.75)


def _closed_eye(canvas, cx, side):
    x0, x1 = cx - EYE_HALF_W, cx + EYE_HALF_W
    lid = _curve(lambda x: 0.035 * (1 - ((x - cx) / EYE_HALF_W) ** 2), x0, x1)
    canvas.paint(canvas.stroke(lid, 0.035), (30, 22, 20))
    canvas.shade(canvas.stroke(lid - [0, 0.07], 0.02, blur_px=1.0), 0.75)
    for k in np.linspace(-0.7, 0.7, 6):  # lashes pointing down
        x = cx + k * EYE_HALF_W
        y = 0.035 * (1 - k * k)
        canvas.paint(canvas.stroke([(x, y), (x + 0.02 * k, y + 0.04)], 0.012), (30, 22, 20))


def _paint_brows(canvas, look, expr):
    for side in (-1, 1):
        inner, outer = side * 0.14, side * 0.7
        lift = expr.brow_raise

        def centre(x):
            t = (x - inner) / (outer - inner)  # 0 at the inner end, 1 at the outer end
            arch = 0.07 * np.sin(np.pi * np.clip(t, 0, 1) ** 0.8)
            return BROW_Y - lift - arch - expr.brow_inner * (1 - t) ** 2 + 0.03 * t

        xs = np.linspace(inner, outer, 20)
        t = (xs - inner) / (outer - inner)
        half = look.brow_thick * (1.0 - 0.6 * t)
        top = np.stack([xs, centre(xs) - half], 1)
        bottom = np.stack([xs, centre(xs) + half], 1)
        brow = canvas.polygon(np.concatenate([top, bottom[::-1]]), blur_px=0.7)
        canvas.paint(brow, look.hair * 0.7 + 10, 0.92)


def _paint_nose(canvas, look):
    w = look.nose_w
    lit = 1 if look.light[0] > 0 else -1  # the bridge's far side from the light is in shadow
    bridge = canvas.polygon([(-lit * 0.09, 0.02), (-lit * 0.05, 0.02), (-lit * 0.1 * w, 0.5), (-lit * 0.16 * w, 0.5)],
                            blur_px=2.5)
    canvas.shade(bridge, 0.82)
    canvas.shade(canvas.blob(0, NOSE_TIP_Y - 0.04, 0.07 * w, 0.06), 1.12)  # highlight on the tip
    canvas.shade(canvas.blob(0, NOSTRIL_Y + 0.07, 0.16 * w, 0.03), 0.8)   # shadow under the nose
    for side in (-1, 1):
        ala = _curve(lambda x: NOSTRIL_Y - 0.09 * np.sqrt(np.clip(1 - ((x - side * 0.13 * w) / (0.07 * w)) ** 2, 0,
                                                                      1)),
                     side * 0.2 * w, side * 0.09 * w, 12)
        canvas.shade(canvas.stroke(ala, 0.022, blur_px=0.8), 0.62)
        canvas.paint(canvas.ellipse(side * 0.075 * w, NOSTRIL_Y, 0.045 * w, 0.022, soft_px=1.5), (45, 28, 25), 0.85)


def _paint_mouth(canvas, look, expr):
    w, full = expr.mouth_w, look.lip_full

    def line(x):
        return MOUTH_Y - expr.corner * (x / w) ** 2

    def profile(x):
        t = np.clip(x / w, -1, 1)
        return np.sqrt(1 - t ** 2) if expr.round_mouth else (1 - t ** 2) ** 0.9

    def cupid(x):
        t = np.clip(np.abs(x) / w, 0, 1)
        return 1.0 - 0.35 * np.exp(-(t / 0.12) ** 2)  # a dip at the middle of the upper lip

    inner_up = lambda x: line(x) - expr.open_up * profile(x)
    inner_low = lambda x: line(x) + expr.open_down * profile(x)
    outer_up = lambda x: inner_up(x) - 0.075 * full * profile(x) ** 0.5 * cupid(x) - 0.01
    outer_low = lambda x: inner_low(x) + 0.095 * full * profile(x) ** 0.6
    canvas.shade(canvas.blob(0, MOUTH_Y + 0.2 + expr.open_down, 0.18, 0.05), 0.85)  # shadow under the lower lip
    canvas.paint(canvas.polygon(np.concatenate([_curve(outer_up, -w, w), _curve(inner_up, w, -w)]), 0.5),
                 look.lips * 0.82)
    canvas.paint(canvas.polygon(np.concatenate([_curve(inner_low, -w, w), _curve(outer_low, w, -w)]), 0.5),
                 look.lips)
    canvas.shade(canvas.blob(0, MOUTH_Y + expr.open_down + 0.045 * full, 0.12, 0.02), 1.15)  # lower-lip gloss
    if expr.open_up + expr.open_down > 0.02:
        gap = np.concatenate([_curve(inner_up, -w * 0.98, w * 0.98), _curve(inner_low, w * 0.98, -w * 0.98)])
        hole = canvas.polygon(gap)
        canvas.paint(hole, (55, 18, 20))
        if expr.teeth:
            teeth = hole * canvas.edge(canvas.v - (inner_up(canvas.u) + 0.07), soft_px=1.0)
            canvas.paint(teeth, (238, 234, 222))
            for k in np.linspace(-0.6, 0.6, 6):  # the gaps between teeth
                x = k * w
                canvas.shade(hole * canvas.stroke([(x, inner_up(x)), (x, inner_up(x) + 0.07)], 0.012, 0.5), 0.8)
    else:
        canvas.paint(canvas.stroke(_curve(line, -w, w), 0.022, blur_px=0.4), look.lips * 0.45)
    for side in (-1, 1):  # dimples at the corners
        canvas.shade(canvas.blob(side * w * 1.02, line(w), 0.03, 0.03), 0.75)


def _paint_cheeks(canvas, look, expr):
    """Raised cheeks, crow's feet and nasolabial folds: the cues that tell a real smile from a flat face."""
    if expr.cheeks > 0:
        for side in (-1, 1):
            canvas.shade(canvas.blob(side * 0.5, 0.35, 0.2, 0.14), 1.0 + 0.18 * expr.cheeks)  # raised cheek
            canvas.shade(canvas.blob(side * 0.45, 0.13, 0.18, 0.05), 1.0 - 0.2 * expr.cheeks)  # bag below the eye
            for k in (-1, 0, 1):  # crow's feet
                x0, y0 = side * (EYE_X + EYE_HALF_W + 0.04), 0.0 + 0.04 * k
                pts = [(x0, y0), (x0 + side * 0.12, y0 + 0.05 * k - 0.01)]
                canvas.shade(canvas.stroke(pts, 0.015, blur_px=0.7), 1.0 - 0.35 * expr.cheeks)
    if expr.folds > 0:
        for side in (-1, 1):
            top = (side * 0.2 * look.nose_w, NOSTRIL_Y - 0.04)
            corner = (side * (expr.mouth_w + 0.08), MOUTH_Y - expr.corner + 0.1)
            mid = ((top[0] + corner[0]) / 2 + side * 0.1, (top[1] + corner[1]) / 2)
            fold = _bezier(top, mid, corner)
            canvas.shade(canvas.stroke(fold, 0.03, blur_px=1.2), 1.0 - 0.4 * expr.folds)
            canvas.shade(canvas.stroke(fold + [side * 0.04, 0], 0.04, blur_px=1.5), 1.0 + 0.12 * expr.folds)


def _bezier(p0, p1, p2, n=16):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)


def _face_mask(canvas, look):
    return canvas.polygon(_head_outline(look))


def _paint_fringe(canvas, look, rng):
    """Sometimes a fringe of hair across the forehead, kept above the brows."""
    if rng.random() < 0.3:
        low = BROW_Y - 0.25
        bottom = _curve(lambda x: low - 0.12 * np.cos(x * 2.2) ** 2 + 0.05 * np.sin(x * 9), 0.95, -0.95, 20)
        fringe = canvas.polygon(np.concatenate([[(-0.95, -1.3), (0.95, -1.3)], bottom]), blur_px=1.0)
        canvas.paint(fringe * _face_mask(canvas, look), _hair_colour(canvas, look))


# ------------------------------------------------------------------------------------------------------ defects

def _paint_defect(canvas, look, defect, rng):
    if defect == "mouth_occluded":
        if rng.random() < 0.5:
            _paint_hand(canvas, look, rng)
        else:
            bar = canvas.polygon([(-0.75, MOUTH_Y - 0.25), (0.75, MOUTH_Y - 0.25), (0.75, MOUTH_Y + 0.3),
                                  (-0.75, MOUTH_Y + 0.3)], blur_px=0.5)
            canvas.paint(bar, rng.uniform(0, 80, 3))
    elif defect == "eyes_occluded":
        bar = canvas.polygon([(-0.85, -0.22), (0.85, -0.22), (0.85, 0.18), (-0.85, 0.18)], blur_px=0.5)
        canvas.paint(bar, rng.uniform(0, 40, 3))
    elif defect == "sunglasses":
        _paint_sunglasses(canvas, rng)


def _paint_hand(canvas, look, rng):
    """A hand held over the mouth: a palm with four fingers, in the same skin tone, shaded."""
    tone = look.skin * rng.uniform(0.85, 1.0)
    palm = canvas.ellipse(0.05, MOUTH_Y + 0.35, 0.55, 0.4, soft_px=1.5)
    canvas.paint(palm, tone)
    for k in range(4):
        y = MOUTH_Y - 0.18 + k * 0.12
        finger = canvas.polygon([(-0.7, y - 0.055), (0.45, y - 0.06), (0.5, y + 0.06), (-0.7, y + 0.055)], 0.6)
        canvas.paint(finger, tone * (1.0 - 0.04 * k))
        canvas.shade(canvas.stroke([(-0.7, y + 0.058), (0.48, y + 0.06)], 0.015, blur_px=0.8), 0.7)


def _paint_sunglasses(canvas, rng):
    tint = rng.uniform(5, 45, 3)
    for side in (-1, 1):
        lens = canvas.ellipse(side * EYE_X, 0.0, 0.33, 0.25, soft_px=1.0)
        canvas.paint(lens, tint)
        canvas.paint(canvas.ellipse(side * EYE_X - 0.08, -0.07, 0.06, 0.03, soft_px=2.0), (200, 200, 210), 0.35)
    canvas.paint(canvas.stroke([(-EYE_X + 0.31, -0.05), (0, -0.08), (EYE_X - 0.31, -0.05)], 0.04), tint)
    for side in (-1, 1):
        canvas.paint(canvas.stroke([(side * (EYE_X + 0.32), -0.05), (side * 1.02, -0.02)], 0.04), tint)


# ------------------------------------------------------------------------------------------------------ non-face

def _draw_non_face(rng, size):
    """A picture with no face in it: stripes, a checkerboard, or scattered shapes over a gradient."""
    rgb = _background(rng, size)
    kind = rng.integers(3)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        angle, period = rng.uniform(0, math.pi), rng.uniform(8, 40)
        t = 0.5 + 0.5 * np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period)
        rgb = rgb * (1 - 0.6 * t[..., None]) + 0.6 * t[..., None] * rng.uniform(0, 255, 3)
    elif kind == 1:
        cell = int(rng.integers(12, 48))
        t = ((xs // cell + ys // cell) % 2)[..., None]
        rgb = rgb * (1 - 0.5 * t) + 0.5 * t * rng.uniform(0, 255, 3)
    else:
        img = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
        for _ in range(int(rng.integers(6, 14))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                pts = rng.integers(0, size, (int(rng.integers(3, 6)), 2)).astype(np.int32)
                cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            else:
                c = tuple(int(v) for v in rng.integers(0, size, 2))
                cv2.rectangle(img, c, (c[0] + int(rng.integers(10, 80)), c[1] + int(rng.integers(10, 80))), colour,
                              -1, cv2.LINE_AA)
        rgb = img.astype(np.float32)
    return _finish(rgb, rng)


# ------------------------------------------------------------------------------------------------------ finish

def _finish(rgb, rng):
    """Camera look: a colour cast, a slight blur and sensor noise, then rounding to uint8."""
    rgb = rgb * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 0.9))
    rgb = rgb + rng.normal(0, rng.uniform(1.5, 4.0), rgb.shape).astype(np.float32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _face_box(canvas, size):
    """The face box in pixels (x, y, w, h), clipped to the image; None when the face is entirely outside it."""
    corners = canvas.to_px([(-BOX_HALF_W, BOX_TOP), (BOX_HALF_W, BOX_TOP), (BOX_HALF_W, BOX_BOTTOM),
                            (-BOX_HALF_W, BOX_BOTTOM)])
    x0, y0 = np.clip(corners.min(0), 0, size)
    x1, y1 = np.clip(corners.max(0), 0, size)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
