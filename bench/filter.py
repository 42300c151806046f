"""filter_masks' vectorised rule against a per-image np.argwhere count, on the same label maps.

Run from the project root:  python bench/filter.py [--copies 200]
Uses the 9 real parsing maps of ../shared/data/parsing_reference (1024x1024), repeated --copies times. Prints the
time of (a) decoding nothing and counting each region of each map with np.argwhere, as a per-image loop would, and
(b) the stage's path: one matrix product over the stored class_counts column; then their ratio (goal >= 20x) and
checks both give the same counts.
"""

import argparse
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from stages.lib.masks import argwhere_region_counts, counts_matrix, visibility_reasons  # noqa: E402
from stages.lib.parsing.labelmap import class_counts  # noqa: E402

MAPS = "../shared/data/parsing_reference/masks"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=200)
    args = ap.parse_args()
    maps = [np.asarray(Image.open(f)) for f in sorted(glob.glob(os.path.join(MAPS, "*.png")))]
    if not maps:
        sys.exit(f"error: no label maps under {MAPS}")
    maps = maps * args.copies
    column = pa.array([class_counts(m) for m in maps[:9]] * args.copies, pa.list_(pa.int64()))

    t0 = time.perf_counter()
    slow = np.stack([argwhere_region_counts(m) for m in maps])
    t_slow = time.perf_counter() - t0

    t0 = time.perf_counter()
    kept, _, fast, _ = visibility_reasons(
        np.ones(len(maps), bool), counts_matrix(column), {"eyes": 200, "brows": 200, "lips": 200}, 512
    )
    t_fast = time.perf_counter() - t0

    assert np.array_equal(slow, fast), "the two counts disagree"
    print(
        f"{len(maps)} maps of {maps[0].shape[0]}x{maps[0].shape[1]}: argwhere per image {t_slow:.3f}s, "
        f"vectorised over stored class_counts {t_fast * 1000:.2f}ms, ratio {t_slow / t_fast:.0f}x "
        f"(same counts; {int(kept.sum())} kept)"
    )


if __name__ == "__main__":
    main()
