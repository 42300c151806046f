"""Putting a translated ROI back into its photo: colour matching, alpha or Poisson blending, and the check that
nothing outside the paste mask moved.

Use (the evaluate stage does this for every test image):
    from stages.lib.overlay import composite, outside_changed_px
    out = composite(image, generated_crop, original_crop, bbox, alpha, match="mean_std", blend="alpha")
    assert outside_changed_px(image, out, alpha, bbox) == 0

Geometry is rois.paste_roi's, the exact inverse of the crop that extract_rois made, so a generated crop lands on the
pixels it was cut from. Colour matching works in crop space, weighted by the alpha: the generator may drift the
brightness of what it draws (the research saw this), and the photo's own lighting inside the mask is the reference.
"""

import cv2
import numpy as np

from .codec import to_grey, to_rgb
from .errors import StageError
from .rois import paste_roi, paste_weights

# context: the mean of the crop around the feature (where the generator should have changed nothing), applied to
# the whole crop. mean_std and histogram take theirs from inside the mask, which also undoes a wanted change of
# content there: on the demo they pulled generated smiles (white teeth) back to the neutral lips' statistics.
COLOR_MATCHES = ("none", "context", "mean_std", "histogram")
BLENDS = ("alpha", "poisson")
# Rec. 601 luma, the weights PIL's "L" conversion uses (codec.to_grey), so "brightness" means one thing everywhere.
LUMA = np.array([0.299, 0.587, 0.114], np.float64)
# Poisson cloning needs the mask's bounding box strictly inside the image; this much reflected border guarantees it.
POISSON_PAD = 4


def luminance(image: np.ndarray) -> np.ndarray:
    """Float64 HxW luma of a uint8 grey or RGB image."""
    image = np.asarray(image)
    return image.astype(np.float64) if image.ndim == 2 else image.astype(np.float64) @ LUMA


def _weights(alpha: np.ndarray, shape) -> np.ndarray:
    if alpha.shape != tuple(shape[:2]):
        raise StageError(f"colour matching wants an alpha of the crop's size {shape[:2]}, got {alpha.shape}")
    return alpha.astype(np.float64) / 255.0


def _as_layout(generated, reference):
    """Both crops as float64 HxWxC with the reference's channel count (grey photos give grey references)."""
    generated, reference = np.asarray(generated), np.asarray(reference)
    if generated.shape[:2] != reference.shape[:2]:
        raise StageError(f"colour matching wants crops of one size, got {generated.shape} and {reference.shape}")
    if reference.ndim == 2:
        return to_grey(generated)[..., None].astype(np.float64), reference[..., None].astype(np.float64)
    return to_rgb(generated).astype(np.float64), reference.astype(np.float64)


def _finish(matched: np.ndarray, grey: bool) -> np.ndarray:
    out = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    return out[..., 0] if grey else out


def color_match_mean_std(generated, reference, alpha) -> np.ndarray:
    """`generated` with each channel's alpha-weighted mean and std moved to `reference`'s (Reinhard-style)."""
    gen, ref = _as_layout(generated, reference)
    return _finish(_match_moments(gen, ref, _weights(alpha, gen.shape)), np.asarray(reference).ndim == 2)


def color_match_context(generated, reference, alpha) -> np.ndarray:
    """`generated` shifted per channel so that its context (the crop outside the mask, weights 1 - alpha) has
    `reference`'s mean: the generator's brightness drift, measured where the content should be unchanged.

    Only the mean moves. Matching the context's std too scaled the new content's contrast by how smooth the
    generator paints skin; on the demo that halved the mouth's transfer rate (0.46 -> 0.09).
    """
    gen, ref = _as_layout(generated, reference)
    w = 1.0 - _weights(alpha, gen.shape)
    return _finish(_match_moments(gen, ref, w, match_std=False), np.asarray(reference).ndim == 2)


def _match_moments(gen: np.ndarray, ref: np.ndarray, w: np.ndarray, match_std=True) -> np.ndarray:
    """Per channel, the affine map that takes gen's w-weighted mean (and std) to ref's, applied to all of gen.

    A channel the generator left flat (std ~ 0) is only shifted: scaling noise up to the reference's contrast would
    invent texture.
    """
    total = w.sum()
    if total <= 0:
        return gen
    out = np.empty_like(gen)
    for c in range(gen.shape[2]):
        g, r = gen[..., c], ref[..., c]
        mg, mr = (w * g).sum() / total, (w * r).sum() / total
        sg = np.sqrt((w * (g - mg) ** 2).sum() / total)
        sr = np.sqrt((w * (r - mr) ** 2).sum() / total)
        scale = sr / sg if match_std and sg > 1e-3 else 1.0
        out[..., c] = (g - mg) * scale + mr
    return out


def _mid_cdf(values: np.ndarray, weights: np.ndarray):
    """The weighted histogram over 0..255 and each level's mid-step CDF (half its own mass), so that equal
    distributions map level to level."""
    hist = np.bincount(values.ravel(), weights=weights.ravel(), minlength=256)[:256]
    cdf = np.cumsum(hist) / hist.sum()
    return hist, cdf - hist / hist.sum() / 2


def color_match_histogram(generated, reference, alpha) -> np.ndarray:
    """`generated` with each channel's alpha-weighted histogram mapped onto `reference`'s (a per-channel LUT).

    Stronger than mean_std: it also matches the shape of the distribution, so a generator that clips its
    highlights gets them back. The LUT applies to the whole crop; only the alpha's support is pasted anyway.
    """
    gen, ref = _as_layout(generated, reference)
    w = _weights(alpha, gen.shape)
    if w.sum() <= 0:
        return _finish(gen, np.asarray(reference).ndim == 2)
    levels = np.arange(256, dtype=np.float64)
    out = np.empty_like(gen)
    for c in range(gen.shape[2]):
        g = gen[..., c].astype(np.uint8)
        _, g_cdf = _mid_cdf(g, w)
        r_hist, r_cdf = _mid_cdf(ref[..., c].astype(np.uint8), w)
        present = r_hist > 0  # np.interp needs increasing x: only levels the reference uses
        lut = np.interp(g_cdf, r_cdf[present], levels[present])
        out[..., c] = lut[g]
    return _finish(out, np.asarray(reference).ndim == 2)


def color_match(generated, reference, alpha, method: str) -> np.ndarray:
    """Dispatch on `evaluate.color_match`; `none` returns the generated crop in the reference's layout."""
    if method == "none":
        return to_grey(generated) if np.asarray(reference).ndim == 2 else to_rgb(generated)
    if method == "context":
        return color_match_context(generated, reference, alpha)
    if method == "mean_std":
        return color_match_mean_std(generated, reference, alpha)
    if method == "histogram":
        return color_match_histogram(generated, reference, alpha)
    raise StageError(f"color_match {method!r} is not one of {', '.join(COLOR_MATCHES)}")


def poisson_paste(image: np.ndarray, crop: np.ndarray, bbox, alpha: np.ndarray) -> np.ndarray:
    """Gradient-domain paste (OpenCV seamless cloning), then feathered through `alpha` like paste_roi.

    seamlessClone solves for pixels whose gradients are the crop's and whose border values are the photo's, so a
    brightness offset in the crop disappears. Its result is blended through the same feathered alpha as the plain
    paste, which keeps every pixel outside the alpha's support bit-identical (the solver alone may touch the
    whole bounding rectangle of its mask).
    """
    weights = paste_weights(alpha, bbox, image.shape)
    support = weights > 0
    if not support.any():
        return image.copy()
    rgb = to_rgb(image)
    # The crop scaled into its box (alpha 255 everywhere): the source whose gradients are cloned.
    source = paste_roi(rgb, to_rgb(crop), bbox, np.full(alpha.shape, 255, np.uint8))
    pad = POISSON_PAD
    rgb_p = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    source_p = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    mask_p = cv2.copyMakeBorder(support.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(mask_p)
    # seamlessClone puts the mask's bounding box at centre - (w // 2, h // 2): this centre keeps it in place.
    centre = (x + w // 2, y + h // 2)
    cloned = cv2.seamlessClone(source_p, rgb_p, mask_p, centre, cv2.NORMAL_CLONE)[pad:-pad, pad:-pad]
    a = weights[..., None]
    blended = rgb.astype(np.float32) * (1.0 - a) + cloned.astype(np.float32) * a
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[~support] = rgb[~support]
    return to_grey(out) if image.ndim == 2 else out


def composite(
    image, generated_crop, original_crop, bbox, alpha, match: str = "context", blend: str = "alpha"
) -> np.ndarray:
    """The photo with its ROI replaced by the generated crop, colour-matched by `match` (COLOR_MATCHES) to the
    original crop, then blended by `blend` (BLENDS)."""
    matched = color_match(generated_crop, original_crop, alpha, match)
    if blend == "alpha":
        return paste_roi(image, matched, bbox, alpha)
    if blend == "poisson":
        return poisson_paste(image, matched, bbox, alpha)
    raise StageError(f"blend {blend!r} is not one of {', '.join(BLENDS)}")


def paste_support(alpha, bbox, shape) -> np.ndarray:
    """The blend weight of one paste (paste_weights); for several ROIs pasted into one image (lists of alphas and
    boxes) the largest of theirs, so that it is > 0 wherever any of them went in."""
    if isinstance(alpha, np.ndarray):
        return paste_weights(alpha, bbox, shape)
    return np.max([paste_weights(a, b, shape) for a, b in zip(alpha, bbox)], axis=0)


def outside_changed_px(original: np.ndarray, result: np.ndarray, alpha, bbox) -> int:
    """How many pixels outside the paste's support (alpha scaled into the box, > 0) differ in any channel.
    `alpha` and `bbox` may be lists, for several ROIs pasted into one image."""
    if original.shape != result.shape:
        raise StageError(f"outside_changed_px wants images of one shape, got {original.shape} and {result.shape}")
    outside = paste_support(alpha, bbox, original.shape) == 0
    differs = original != result
    if differs.ndim == 3:
        differs = differs.any(axis=2)
    return int((differs & outside).sum())


def brightness_shift(original: np.ndarray, result: np.ndarray, alpha, bbox) -> float:
    """|weighted mean luma of `result` - that of `original`| over the paste's support, weighted by the alpha
    (lists of alphas and boxes: the largest weight of several pastes).

    The drift the eye sees: a darker or brighter patch where the ROI went in, in grey levels (0-255).
    """
    weights = paste_support(alpha, bbox, original.shape).astype(np.float64)
    total = weights.sum()
    if total <= 0:
        return 0.0
    diff = luminance(result) - luminance(original)
    return float(abs((weights * diff).sum() / total))
