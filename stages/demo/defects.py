"""The defects painted over a drawn face: a hand or a bar over the mouth, a bar over the eyes, sunglasses.

Closed eyes, tiny and cut-off faces are drawn by the portrait itself (expression and placement); non-faces and
duplicates are chosen by the plan.
"""

from .canvas import EYE_X, MOUTH_Y


def paint_defect(canvas, look, defect, rng):
    if defect == "mouth_occluded":
        if rng.random() < 0.5:
            _paint_hand(canvas, look, rng)
        else:
            bar = canvas.polygon(
                [(-0.75, MOUTH_Y - 0.25), (0.75, MOUTH_Y - 0.25), (0.75, MOUTH_Y + 0.3), (-0.75, MOUTH_Y + 0.3)],
                blur_px=0.5,
            )
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
