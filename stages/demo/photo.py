"""The photo around a face: the blurred backdrop, the pictures with no face in them, and the camera's finish."""

import math

import cv2
import numpy as np


def background(rng, size):
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


def draw_non_face(rng, size):
    """A picture with no face in it: stripes, a checkerboard, or scattered shapes over a gradient."""
    rgb = background(rng, size)
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
                cv2.rectangle(
                    img,
                    c,
                    (c[0] + int(rng.integers(10, 80)), c[1] + int(rng.integers(10, 80))),
                    colour,
                    -1,
                    cv2.LINE_AA,
                )
        rgb = img.astype(np.float32)
    return finish(rgb, rng)


def finish(rgb, rng):
    """Camera look: a colour cast, a slight blur and sensor noise, then rounding to uint8."""
    rgb = rgb * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 0.9))
    rgb = rgb + rng.normal(0, rng.uniform(1.5, 4.0), rgb.shape).astype(np.float32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
