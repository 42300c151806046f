"""Image-quality numbers for evaluation: PSNR, SSIM (Gaussian window) and KID (unbiased polynomial-kernel MMD).

Use:
    from stages.lib.quality import psnr, ssim_map, kid
    psnr(original, composite)                      # dB over all pixels and channels; PSNR_MAX when identical
    psnr(original, composite, region=box_mask)     # only where region is True
    ssim_map(original, composite).mean()           # mean SSIM; average the map over any region instead
    kid(features_generated, features_real)         # (mean, std) over random subsets, deterministic by seed

All take uint8 images (grey HxW or RGB HxWx3) and compute in float64.
"""

import cv2
import numpy as np

from .errors import StageError

# Identical images have infinite PSNR; JSON has no infinity, and a mean over images must stay finite. 100 dB is an
# MSE of 1e-10 grey levels squared, far beyond any rounding of a real edit.
PSNR_MAX = 100.0
# SSIM as Wang et al. (2004) define it: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0


def _pair(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise StageError(f"quality metrics want images of one shape, got {a.shape} and {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a, b, region=None) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), over `region` (bool HxW) when given; capped at PSNR_MAX."""
    a, b = _pair(a, b)
    sq = (a - b) ** 2
    if sq.ndim == 3:
        sq = sq.mean(axis=2)
    if region is not None:
        if not region.any():
            raise StageError("psnr over an empty region")
        sq = sq[region]
    mse = float(sq.mean())
    if mse <= DATA_RANGE**2 * 10 ** (-PSNR_MAX / 10):
        return PSNR_MAX
    return float(10 * np.log10(DATA_RANGE**2 / mse))


def _blur(x):
    # Reflect101 at the borders: the window never reads invented zeros, so flat images give SSIM exactly 1.
    return cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def ssim_map(a, b) -> np.ndarray:
    """Per-pixel SSIM (float64 HxW); for colour images the mean of the per-channel maps.

    Local means, variances and covariance come from a Gaussian-weighted window around each pixel:
    SSIM = (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)).
    """
    a, b = _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    maps = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = _blur(x), _blur(y)
        vx = _blur(x * x) - mx * mx
        vy = _blur(y * y) - my * my
        cov = _blur(x * y) - mx * my
        maps.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return np.mean(maps, axis=0)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the kernel KID uses (Binkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of squared MMD between samples x (m, d) and y (n, d): within-set kernel means leave
    out the diagonal (i == j), the cross term keeps every pair. It can be slightly negative when the sets match."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise StageError(f"MMD needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(generated: np.ndarray, real: np.ndarray, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Kernel Inception Distance with the caller's features: the unbiased MMD^2 averaged over `n_subsets` random
    subsets of min(subset_size, len(generated), len(real)) rows from each set (without replacement).

    Small sets get subsets of their own size; with one subset that uses every row the draw is the whole set, so
    it is computed once. Returns (mean, std over subsets).
    """
    x = np.asarray(generated, np.float64)
    y = np.asarray(real, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise StageError(f"kid wants two (n, d) feature arrays of one d, got {x.shape} and {y.shape}")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise StageError(f"kid needs at least 2 feature rows per set, got {len(x)} and {len(y)}")
    if size == len(x) == len(y):
        value = mmd2_unbiased(x, y)
        return value, 0.0
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(n_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
