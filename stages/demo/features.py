"""The parts of a face painted on a `Canvas`: eyes (open or closed), brows, nose, mouth, cheeks and folds."""

import numpy as np

from .canvas import BROW_Y, EYE_HALF_W, EYE_X, MOUTH_Y, NOSE_TIP_Y, NOSTRIL_Y, bezier, curve


def paint_eyes(canvas, look, expr):
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
        return -up * (1 - tt**2) * (1 - 0.15 * side * tt)

    def lower(x):
        tt = t(x)
        return low * (1 - tt**2) * (1 + 0.1 * side * tt)

    return upper, lower


def _open_eye(canvas, look, expr, cx, side):
    up, low = expr.eye_upper * look.eye_open, expr.eye_lower
    upper, lower = _lid_curves(cx, side, up, low)
    x0, x1 = cx - EYE_HALF_W, cx + EYE_HALF_W
    shape = np.concatenate([curve(upper, x0, x1), curve(lower, x1, x0)])
    white = canvas.polygon(shape)
    canvas.paint(white, (235, 232, 228))
    canvas.shade(white * canvas.blob(cx, -up, EYE_HALF_W, up * 0.8), 0.75)  # the lid's shadow on the eyeball
    ix, iy = cx + look.gaze[0], look.gaze[1] - 0.005
    iris = canvas.ellipse(ix, iy, 0.085, 0.085) * white
    canvas.paint(iris, look.iris)
    canvas.shade(
        canvas.ellipse(ix, iy, 0.085, 0.085, soft_px=3) * white * (1 - canvas.ellipse(ix, iy, 0.06, 0.06, soft_px=3)),
        0.7,
    )
    canvas.paint(canvas.ellipse(ix, iy, 0.037, 0.037) * white, (12, 10, 10))
    canvas.paint(canvas.ellipse(ix + 0.025, iy - 0.03, 0.014, 0.014) * white, (250, 250, 250), 0.9)
    lash = curve(upper, x0 - 0.02, x1 + 0.02)
    canvas.paint(canvas.stroke(lash, 0.035), (25, 18, 16))
    crease = curve(lambda x: upper(x) - 0.06 - 0.02 * (1 - ((x - cx) / EYE_HALF_W) ** 2), x0 + 0.02, x1)
    canvas.shade(canvas.stroke(crease, 0.02, blur_px=0.8), 0.7)
    canvas.shade(canvas.stroke(curve(lower, x0 + 0.03, x1 - 0.01), 0.018, blur_px=0.6), 0.75)


def _closed_eye(canvas, cx, side):
    x0, x1 = cx - EYE_HALF_W, cx + EYE_HALF_W
    lid = curve(lambda x: 0.035 * (1 - ((x - cx) / EYE_HALF_W) ** 2), x0, x1)
    canvas.paint(canvas.stroke(lid, 0.035), (30, 22, 20))
    canvas.shade(canvas.stroke(lid - [0, 0.07], 0.02, blur_px=1.0), 0.75)
    for k in np.linspace(-0.7, 0.7, 6):  # lashes pointing down
        x = cx + k * EYE_HALF_W
        y = 0.035 * (1 - k * k)
        canvas.paint(canvas.stroke([(x, y), (x + 0.02 * k, y + 0.04)], 0.012), (30, 22, 20))


def paint_brows(canvas, look, expr):
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


def paint_nose(canvas, look):
    w = look.nose_w
    lit = 1 if look.light[0] > 0 else -1  # the bridge's far side from the light is in shadow
    bridge = canvas.polygon(
        [(-lit * 0.09, 0.02), (-lit * 0.05, 0.02), (-lit * 0.1 * w, 0.5), (-lit * 0.16 * w, 0.5)], blur_px=2.5
    )
    canvas.shade(bridge, 0.82)
    canvas.shade(canvas.blob(0, NOSE_TIP_Y - 0.04, 0.07 * w, 0.06), 1.12)  # highlight on the tip
    canvas.shade(canvas.blob(0, NOSTRIL_Y + 0.07, 0.16 * w, 0.03), 0.8)  # shadow under the nose
    for side in (-1, 1):
        ala = curve(
            lambda x: NOSTRIL_Y - 0.09 * np.sqrt(np.clip(1 - ((x - side * 0.13 * w) / (0.07 * w)) ** 2, 0, 1)),
            side * 0.2 * w,
            side * 0.09 * w,
            12,
        )
        canvas.shade(canvas.stroke(ala, 0.022, blur_px=0.8), 0.62)
        canvas.paint(canvas.ellipse(side * 0.075 * w, NOSTRIL_Y, 0.045 * w, 0.022, soft_px=1.5), (45, 28, 25), 0.85)


def paint_mouth(canvas, look, expr):
    w, full = expr.mouth_w, look.lip_full

    def line(x):
        return MOUTH_Y - expr.corner * (x / w) ** 2

    def profile(x):
        t = np.clip(x / w, -1, 1)
        return np.sqrt(1 - t**2) if expr.round_mouth else (1 - t**2) ** 0.9

    def cupid(x):
        t = np.clip(np.abs(x) / w, 0, 1)
        return 1.0 - 0.35 * np.exp(-((t / 0.12) ** 2))  # a dip at the middle of the upper lip

    inner_up = lambda x: line(x) - expr.open_up * profile(x)
    inner_low = lambda x: line(x) + expr.open_down * profile(x)
    outer_up = lambda x: inner_up(x) - 0.075 * full * profile(x) ** 0.5 * cupid(x) - 0.01
    outer_low = lambda x: inner_low(x) + 0.095 * full * profile(x) ** 0.6
    canvas.shade(canvas.blob(0, MOUTH_Y + 0.2 + expr.open_down, 0.18, 0.05), 0.85)  # shadow under the lower lip
    canvas.paint(
        canvas.polygon(np.concatenate([curve(outer_up, -w, w), curve(inner_up, w, -w)]), 0.5), look.lips * 0.82
    )
    canvas.paint(canvas.polygon(np.concatenate([curve(inner_low, -w, w), curve(outer_low, w, -w)]), 0.5), look.lips)
    canvas.shade(canvas.blob(0, MOUTH_Y + expr.open_down + 0.045 * full, 0.12, 0.02), 1.15)  # lower-lip gloss
    if expr.open_up + expr.open_down > 0.02:
        gap = np.concatenate([curve(inner_up, -w * 0.98, w * 0.98), curve(inner_low, w * 0.98, -w * 0.98)])
        hole = canvas.polygon(gap)
        canvas.paint(hole, (55, 18, 20))
        if expr.teeth:
            teeth = hole * canvas.edge(canvas.v - (inner_up(canvas.u) + 0.07), soft_px=1.0)
            canvas.paint(teeth, (238, 234, 222))
            for k in np.linspace(-0.6, 0.6, 6):  # the gaps between teeth
                x = k * w
                canvas.shade(hole * canvas.stroke([(x, inner_up(x)), (x, inner_up(x) + 0.07)], 0.012, 0.5), 0.8)
    else:
        canvas.paint(canvas.stroke(curve(line, -w, w), 0.022, blur_px=0.4), look.lips * 0.45)
    for side in (-1, 1):  # dimples at the corners
        canvas.shade(canvas.blob(side * w * 1.02, line(w), 0.03, 0.03), 0.75)


def paint_cheeks(canvas, look, expr):
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
            fold = bezier(top, mid, corner)
            canvas.shade(canvas.stroke(fold, 0.03, blur_px=1.2), 1.0 - 0.4 * expr.folds)
            canvas.shade(canvas.stroke(fold + [side * 0.04, 0], 0.04, blur_px=1.5), 1.0 + 0.12 * expr.folds)
