"""Overlay and quality metrics on real photos: nothing outside the mask moves, colour matching undoes a brightening
generator, Poisson cloning keeps the photo's lighting, and PSNR/SSIM/KID agree with their definitions."""

import numpy as np
import pytest

from stages.lib.errors import StageError
from stages.lib.overlay import (
    brightness_shift,
    color_match,
    color_match_context,
    color_match_histogram,
    color_match_mean_std,
    composite,
    luminance,
    outside_changed_px,
)
from stages.lib.quality import PSNR_MAX, kid, mmd2_unbiased, polynomial_kernel, psnr, ssim_map
from stages.lib.rois import crop_roi, paste_weights, roi_alpha, roi_box
from tests.test_rois import load_reference

SIZE = 64


def brighten(crop, amount=60):
    """What a generator with a brightness drift does: the same content, lighter."""
    return np.clip(crop.astype(np.int16) + amount, 0, 255).astype(np.uint8)


def roi_case(shared_data, name="1112", roi="mouth", margin=0.35, side=160):
    image, labels = load_reference(shared_data, name, side)
    bbox = roi_box(labels, roi, margin)
    return image, bbox, crop_roi(image, bbox, SIZE), roi_alpha(labels, roi, bbox, SIZE, 0.15)


@pytest.mark.parametrize("blend", ["alpha", "poisson"])
@pytest.mark.parametrize("match", ["none", "context", "mean_std", "histogram"])
def test_nothing_outside_the_alpha_changes(shared_data, blend, match):
    image, bbox, crop, alpha = roi_case(shared_data)
    out = composite(image, brighten(crop), crop, bbox, alpha, match, blend)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert outside_changed_px(image, out, alpha, bbox) == 0
    # ... and the edit did land inside it.
    inside = paste_weights(alpha, bbox, image.shape) > 0
    assert (out != image).any(axis=2)[inside].any()


def test_nothing_outside_changes_when_the_box_leaves_the_image(shared_data):
    image, labels = load_reference(shared_data, "1309", 160)
    image = image[:, 40:]  # cut the photo so the face box runs off its left edge
    labels = labels[:, 40:]
    bbox = roi_box(labels, "face", 0.08)
    assert bbox[0] < 0
    crop, alpha = crop_roi(image, bbox, 128), roi_alpha(labels, "face", bbox, 128, 0.15)
    for blend in ("alpha", "poisson"):
        out = composite(image, brighten(crop), crop, bbox, alpha, "mean_std", blend)
        assert outside_changed_px(image, out, alpha, bbox) == 0


def test_outside_changed_px_counts_a_stray_pixel(shared_data):
    image, bbox, crop, alpha = roi_case(shared_data)
    out = composite(image, crop, crop, bbox, alpha, "none", "alpha")
    out[0, 0] = 255 - out[0, 0]
    assert outside_changed_px(image, out, alpha, bbox) == 1


@pytest.mark.parametrize("match", ["context", "mean_std", "histogram"])
def test_colour_matching_undoes_a_brightening_generator(shared_data, match):
    for name in ("1112", "2095", "2125"):
        image, bbox, crop, alpha = roi_case(shared_data, name)
        drifted = composite(image, brighten(crop), crop, bbox, alpha, "none", "alpha")
        matched = composite(image, brighten(crop), crop, bbox, alpha, match, "alpha")
        raw_shift = brightness_shift(image, drifted, alpha, bbox)
        shift = brightness_shift(image, matched, alpha, bbox)
        assert raw_shift > 30  # the brightening shows, weighted by the feathered alpha
        assert shift < 0.1 * raw_shift, (name, match, shift, raw_shift)


def test_poisson_blending_keeps_the_photos_lighting(shared_data):
    image, bbox, crop, alpha = roi_case(shared_data)
    plain = composite(image, brighten(crop), crop, bbox, alpha, "none", "alpha")
    cloned = composite(image, brighten(crop), crop, bbox, alpha, "none", "poisson")
    assert brightness_shift(image, cloned, alpha, bbox) < 0.25 * brightness_shift(image, plain, alpha, bbox)


def test_mean_std_matches_weighted_statistics():
    rng = np.random.default_rng(0)
    ref = rng.integers(60, 120, (32, 32, 3)).astype(np.uint8)
    gen = rng.integers(100, 250, (32, 32, 3)).astype(np.uint8)
    alpha = np.zeros((32, 32), np.uint8)
    alpha[8:24, 8:24] = 255
    out = color_match_mean_std(gen, ref, alpha).astype(np.float64)
    inside = alpha > 0
    for c in range(3):
        assert abs(out[..., c][inside].mean() - ref[..., c][inside].mean()) < 0.6
        assert abs(out[..., c][inside].std() - ref[..., c][inside].std()) < 0.6
    # a grey photo gets a grey crop back
    assert color_match(gen, ref[..., 0], alpha, "mean_std").shape == (32, 32)


def test_context_match_removes_drift_but_keeps_a_change_of_content():
    """A generator that opens a bright mouth *and* brightens everything: the drift goes, the new content stays."""
    rng = np.random.default_rng(2)
    ref = rng.integers(90, 130, (32, 32, 3)).astype(np.uint8)
    alpha = np.zeros((32, 32), np.uint8)
    alpha[12:20, 8:24] = 255
    changed = ref.copy()
    changed[14:18, 10:22] = 235  # teeth where the neutral face had lips
    gen = brighten(changed, 15)
    inside, context = alpha == 255, alpha == 0
    by_context = color_match_context(gen, ref, alpha).astype(int)
    assert np.abs(by_context[context].mean(axis=0) - ref[context].mean(axis=0)).max() < 0.6
    assert np.abs(by_context[14:18, 10:22] - 235).max() <= 3
    by_inside = color_match_mean_std(gen, ref, alpha).astype(int)
    assert by_inside[14:18, 10:22].mean() < 200  # matching inside the mask pulls the teeth back towards the lips
    assert by_context[inside].mean() > by_inside[inside].mean() + 20


def test_histogram_match_maps_a_shifted_copy_back():
    rng = np.random.default_rng(1)
    ref = rng.integers(20, 180, (48, 48, 3)).astype(np.uint8)
    alpha = np.full((48, 48), 255, np.uint8)
    out = color_match_histogram(brighten(ref, 50), ref, alpha)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_unknown_methods_are_one_line_errors(shared_data):
    image, bbox, crop, alpha = roi_case(shared_data)
    with pytest.raises(StageError, match="color_match"):
        composite(image, crop, crop, bbox, alpha, "grading", "alpha")
    with pytest.raises(StageError, match="blend"):
        composite(image, crop, crop, bbox, alpha, "none", "multiband")


# ---- PSNR and SSIM --------------------------------------------------------------------------------------------


def test_psnr_follows_its_definition():
    a = np.full((10, 10), 100, np.uint8)
    b = a.copy()
    b[0, :] = 110  # MSE = 10 rows^-1 * 100 = 10
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 10.0))
    assert psnr(a, a) == PSNR_MAX
    region = np.zeros((10, 10), bool)
    region[5:] = True
    assert psnr(a, b, region) == PSNR_MAX


def test_ssim_is_one_for_equal_images_and_follows_the_luminance_term_for_flat_ones(shared_data):
    image, _, _, _ = roi_case(shared_data)
    assert ssim_map(image, image) == pytest.approx(np.ones(image.shape[:2]))
    # Flat images: variances and covariance are 0, so SSIM is the luminance term alone.
    a, b = np.full((20, 20), 80, np.uint8), np.full((20, 20), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim_map(a, b) == pytest.approx(np.full((20, 20), (2 * 80 * 120 + c1) / (80**2 + 120**2 + c1)))


def test_ssim_falls_with_noise_and_is_symmetric(shared_data):
    image, _, _, _ = roi_case(shared_data)
    rng = np.random.default_rng(0)
    noisy = [np.clip(image + rng.normal(0, s, image.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    scores = [ssim_map(image, n).mean() for n in noisy]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    assert ssim_map(noisy[1], image).mean() == pytest.approx(scores[1])


# ---- KID ------------------------------------------------------------------------------------------------------


def test_unbiased_mmd_matches_the_pairwise_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 4)), rng.normal(0.5, 1, size=(6, 4))
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)
    assert polynomial_kernel(x, y).shape == (5, 6)


def test_kid_separates_distributions_and_is_deterministic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(120, 16)), rng.normal(size=(90, 16))
    shifted = rng.normal(0.7, 1, size=(90, 16))
    same, _ = kid(a, b, n_subsets=20, subset_size=50, seed=3)
    apart, spread = kid(a, shifted, n_subsets=20, subset_size=50, seed=3)
    assert abs(same) < 0.1 * apart and spread > 0
    assert kid(a, shifted, n_subsets=20, subset_size=50, seed=3) == (apart, spread)
    # a set no bigger than the subset is used whole, once
    assert kid(a[:30], b[:30], subset_size=50)[0] == pytest.approx(mmd2_unbiased(a[:30], b[:30]))
    with pytest.raises(StageError):
        kid(a[:1], b)


def test_luminance_is_the_grey_conversion(shared_data):
    from stages.lib.codec import to_grey

    image, _, _, _ = roi_case(shared_data)
    assert np.abs(luminance(image) - to_grey(image)).max() <= 1.0
