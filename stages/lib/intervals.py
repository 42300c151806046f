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
"""

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
