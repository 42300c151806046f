"""A whole demo portrait: the person placed in the frame, body, head and hair, the face's features, the defect."""

import math

import numpy as np

from .canvas import BROW_Y, CHIN_Y, CRANIUM_TOP, Canvas, curve
from .defects import paint_defect
from .features import paint_brows, paint_cheeks, paint_eyes, paint_mouth, paint_nose
from .look import expression, random_look
from .photo import background, finish

# The face box (truth.face_bbox) spans cheek to cheek and hairline to chin, like a FER-style face crop.
BOX_TOP, BOX_BOTTOM, BOX_HALF_W = -1.05, CHIN_Y + 0.05, 1.02


def draw_portrait(rng, size: int, emotion: str, defect: str):
    """A face photo of `emotion` with `defect` painted in; returns (uint8 RGB, face box or None)."""
    look, expr = random_look(rng), expression(rng, emotion)
    if defect == "eyes_closed":
        expr.eye_upper, expr.eye_lower = 0.0, 0.0
    scale, center = _placement(rng, size, defect)
    roll = math.radians(rng.uniform(-9, 9))
    canvas = Canvas(background(rng, size), center, scale, roll)
    _paint_body(canvas, look)
    _paint_head(canvas, look)
    paint_eyes(canvas, look, expr)
    paint_brows(canvas, look, expr)
    paint_nose(canvas, look)
    paint_mouth(canvas, look, expr)
    paint_cheeks(canvas, look, expr)
    _paint_fringe(canvas, look, rng)
    paint_defect(canvas, look, defect, rng)
    image = finish(canvas.rgb, rng)
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
    jaw = [(w * (1 - t**look.jaw) ** (1 / look.jaw), CHIN_Y * t) for t in np.linspace(0, 1, n // 2)]
    left_jaw = [(-x, y) for x, y in jaw]
    # from the right cheek over the top to the left cheek, down the left jaw to the chin, back up the right jaw
    return np.array(top + left_jaw + jaw[::-1])


def _paint_body(canvas, look):
    """Hair behind the head, the neck, shoulders in clothes, and the ears."""
    if look.long_hair:  # hair falling behind the head down to the shoulders
        back = canvas.ellipse(0, -0.3, look.face_w * 1.3, 2.1, soft_px=2.0) * canvas.edge(canvas.v - 1.7, 3.0)
        canvas.paint(back, _hair_colour(canvas, look) * 0.8)
    canvas.paint(
        canvas.polygon([(-2.6, 3.6), (-2.2, 2.25), (-0.6, 1.95), (0.6, 1.95), (2.2, 2.25), (2.6, 3.6)], blur_px=1.0),
        look.cloth,
    )
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


def _face_mask(canvas, look):
    return canvas.polygon(_head_outline(look))


def _paint_fringe(canvas, look, rng):
    """Sometimes a fringe of hair across the forehead, kept above the brows."""
    if rng.random() < 0.3:
        low = BROW_Y - 0.25
        bottom = curve(lambda x: low - 0.12 * np.cos(x * 2.2) ** 2 + 0.05 * np.sin(x * 9), 0.95, -0.95, 20)
        fringe = canvas.polygon(np.concatenate([[(-0.95, -1.3), (0.95, -1.3)], bottom]), blur_px=1.0)
        canvas.paint(fringe * _face_mask(canvas, look), _hair_colour(canvas, look))


def _face_box(canvas, size):
    """The face box in pixels (x, y, w, h), clipped to the image; None when the face is entirely outside it."""
    corners = canvas.to_px(
        [(-BOX_HALF_W, BOX_TOP), (BOX_HALF_W, BOX_TOP), (BOX_HALF_W, BOX_BOTTOM), (-BOX_HALF_W, BOX_BOTTOM)]
    )
    x0, y0 = np.clip(corners.min(0), 0, size)
    x1, y1 = np.clip(corners.max(0), 0, size)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
