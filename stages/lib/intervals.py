"""95% intervals for evaluation numbers: a seeded, paired percentile bootstrap over test faces.

"Paired": every statistic of one resample is computed on the same drawn faces, so a gain (composite minus original
of the same face) keeps its pairing and two numbers of one run can be compared draw by draw.

    from stages.lib.intervals import bootstrap
    per_face = {"comp_hit": comp == tgt, "orig_hit": orig == tgt}          # arrays of one length, one row per face
    stats = {"transfer_rate": lambda d: d["comp_hit"].mean(),
             "transfer_gain": lambda d: d["comp_hit"].mean() - d["orig_hit"].mean()}
    cis = bootstrap(per_face, stats, resamples=2000, seed=0)               # {"transfer_rate": (lo, hi), ...}

NaN entries (a face the geometry judge could not re-detect, say) are ignored by statistics written with nanmean;
a statistic that is NaN on a resample is left out of that statistic's interval.

A share of items counted once each (k of n test images leak, say) gets `wilson(k, n)` instead: a bootstrap of 0 of n
resamples nothing but zeros and says [0, 0], where Wilson's score interval still says how high the rate may be.
"""

import math

import numpy as np


def bootstrap(per_face: dict, stats: dict, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """{name: [lo, hi]} percentile intervals of each statistic over `resamples` resamples of the faces (rows)."""
    lengths = {len(v) for v in per_face.values()}
    if len(lengths) != 1:
        raise ValueError(f"per-face arrays differ in length: {sorted(lengths)}")
    n = lengths.pop()
    if n == 0 or resamples < 1:
        return {name: None for name in stats}
    arrays = {k: np.asarray(v, np.float64) for k, v in per_face.items()}
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in stats}
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        sample = {k: v[idx] for k, v in arrays.items()}
        for name, fn in stats.items():
            draws[name][r] = fn(sample)
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in draws.items():
        values = values[np.isfinite(values)]
        out[name] = [float(v) for v in np.percentile(values, [tail, 100 - tail])] if len(values) else None
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple:
    """Wilson's score interval (lo, hi) of the share k / n (95% with z=1.96); (nan, nan) when n is 0."""
    if n == 0:
        return (float("nan"), float("nan"))
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))
