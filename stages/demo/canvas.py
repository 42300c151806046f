"""The canvas a demo face is painted on (an RGB image whose pixels also have face-unit coordinates, so shapes are
painted as soft masks), the face-unit positions of the features, and the curve helpers the painters share."""

import math

import cv2
import numpy as np

# Face geometry is in "face units": 1 = half the face width at the cheekbones; the origin is between the eyes.
EYE_X, EYE_HALF_W = 0.42, 0.2
BROW_Y = -0.30
NOSE_TIP_Y, NOSTRIL_Y = 0.56, 0.64
MOUTH_Y = 0.95
CHIN_Y = 1.55
CRANIUM_TOP = -1.62


class Canvas:
    """A float RGB image plus the pixel grid in face units, so shapes can be painted as implicit soft masks."""

    def __init__(self, rgb: np.ndarray, center, scale: float, roll: float):
        self.rgb = rgb
        self.h, self.w = rgb.shape[:2]
        self.cx, self.cy = center
        self.scale = scale
        self.cos, self.sin = math.cos(roll), math.sin(roll)
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
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


def curve(f, x0, x1, n=24):
    xs = np.linspace(x0, x1, n)
    return np.stack([xs, f(xs)], axis=1)


def bezier(p0, p1, p2, n=16):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def mix(a, b, t):
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t
