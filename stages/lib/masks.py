"""The visibility rule of filter_masks: eyes, brows and lips must each cover enough pixels.

The research rule is "each mask > 200 pixels at 512x512". An image of another size gets the threshold scaled by its
area relative to 512^2, so the rule means the same fraction of the face image at any resolution.

Everything here works on whole columns at once. The parser already stored `class_counts` (19 pixel counts per image,
at the image's resolution), so the region counts are one matrix product and the image area is the row sum: no label
map has to be decoded. `bench/filter.py` times this against counting each map with np.argwhere.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .labels import N_PARSE_CLASSES, REGIONS

CHECKED_REGIONS = ("eyes", "brows", "lips")
JOIN = "+"


def region_matrix(regions=CHECKED_REGIONS) -> np.ndarray:
    """(19, R) 0/1 matrix: class_counts @ it gives each region's pixel count."""
    m = np.zeros((N_PARSE_CLASSES, len(regions)), np.int64)
    for j, name in enumerate(regions):
        m[list(REGIONS[name]), j] = 1
    return m


def counts_matrix(class_counts) -> np.ndarray:
    """(N, 19) int64 from a column of 19-int lists; a null row (the parser found no face) becomes zeros.

    Takes a pyarrow list column (read without a Python loop: its flat values reshaped) or a Python list of lists.
    """
    if isinstance(class_counts, (pa.Array, pa.ChunkedArray)):
        col = class_counts.combine_chunks() if isinstance(class_counts, pa.ChunkedArray) else class_counts
        present = col.is_valid().to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if np.any(lengths[present] != N_PARSE_CLASSES):
            raise ValueError(f"class_counts must hold {N_PARSE_CLASSES} ints per row")
        out = np.zeros((len(col), N_PARSE_CLASSES), np.int64)
        out[present] = col.drop_null().flatten().to_numpy(zero_copy_only=False).reshape(-1, N_PARSE_CLASSES)
        return out
    out = np.zeros((len(class_counts), N_PARSE_CLASSES), np.int64)
    present = [i for i, c in enumerate(class_counts) if c is not None]
    if present:
        rows = np.asarray([class_counts[i] for i in present], dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != N_PARSE_CLASSES:
            raise ValueError(f"class_counts must hold {N_PARSE_CLASSES} ints per row, got shape {rows.shape}")
        out[present] = rows
    return out


def region_counts(counts: np.ndarray, regions=CHECKED_REGIONS) -> np.ndarray:
    """(N, R) pixel counts of each region, from (N, 19) class counts."""
    return counts @ region_matrix(regions)


def scaled_thresholds(areas: np.ndarray, min_px: dict, ref_size: int, regions=CHECKED_REGIONS) -> np.ndarray:
    """(N, R) per-image thresholds: min_px[region] * area / ref_size^2."""
    base = np.asarray([float(min_px[r]) for r in regions])
    return np.asarray(areas, np.float64)[:, None] / float(ref_size) ** 2 * base[None, :]


def visibility_reasons(face_found, counts: np.ndarray, min_px: dict, ref_size: int, regions=CHECKED_REGIONS):
    """Decide every row at once from `face_found` (N,) and `counts` (N, 19), see counts_matrix().

    Returns (kept bool (N,), reasons list[str] ('' when kept), region counts (N, R) int64, thresholds (N, R)).
    A region passes when its count is strictly above its threshold ("> 200 pixels"). A row without a face is
    `no_face` alone; otherwise the failing regions are joined with '+' in `regions` order, e.g. `eyes_small+lips_small`.
    """
    face = np.asarray(face_found, dtype=bool).copy()
    areas = counts.sum(axis=1)  # the counts cover every pixel of the map, so their sum is height * width
    face &= areas > 0
    got = region_counts(counts, regions)
    need = scaled_thresholds(areas, min_px, ref_size, regions)
    small = (got <= need) & face[:, None]
    names = np.asarray([f"{r}_small" for r in regions], dtype=object)
    reasons = [JOIN.join(names[row]) for row in small]
    reasons = [r if f else "no_face" for r, f in zip(reasons, face)]
    kept = face & ~small.any(axis=1)
    return kept, reasons, got, need


def argwhere_region_counts(label_map: np.ndarray, regions=CHECKED_REGIONS) -> np.ndarray:
    """The per-image reference: count each region's pixels with np.argwhere. Slow; for benchmarks and tests only."""
    return np.asarray([len(np.argwhere(np.isin(label_map, REGIONS[r]))) for r in regions], np.int64)


def split_reasons(reason: str) -> list:
    """The single checks inside a joined reason: 'eyes_small+lips_small' -> ['eyes_small', 'lips_small']."""
    return [part for part in reason.replace(",", JOIN).split(JOIN) if part]
