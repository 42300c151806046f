"""What filter_masks' rule rejects with FaceMesh's visibility check off (landmarks only) and on, side by side.

Run from the project root (about a minute on 2 CPU cores):
    python bench/visibility.py                        # demo 600 faces at 256 px (seed 0) and 500 real photos
    python bench/visibility.py --n 300 --size 160 --real 0
Landmarks are found once per image; the two label maps come from the same landmarks, so the difference is the check
alone. Limits: params.yaml parse.visibility_limits; the rule: params.yaml filter_masks (both read only).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTOS = ROOT.parent / "shared" / "data" / "facial_expressions" / "images"


def limits_from_params():
    from stages.lib import params as P
    from stages.lib.parsing import read_visibility

    limits = read_visibility(P.load(str(ROOT / "params.yaml")))
    if limits is None:
        sys.exit("params.yaml has parse.visibility: false; nothing to compare")
    return limits


def bench_demo(parser, limits, n, size, seed):
    from stages.demo import render_demo
    from tests.helpers.visibility_rates import find_landmarks, rates_by_defect, rejected

    t0 = time.perf_counter()
    samples = list(render_demo(n, size, seed))
    images, defects = [s.image for s in samples], [s.truth["defect"] for s in samples]
    landmarks = find_landmarks(parser, images)
    t1 = time.perf_counter()
    before = rates_by_defect(defects, rejected(parser, images, landmarks, None))
    t2 = time.perf_counter()
    after = rates_by_defect(defects, rejected(parser, images, landmarks, limits))
    t3 = time.perf_counter()
    print(f"demo n={n} size={size} seed={seed}: share rejected by filter_masks' rule")
    print(f"  {'defect':16s} {'count':>5s} {'landmarks only':>15s} {'visibility on':>14s}")
    for defect, (share, count) in after.items():
        print(f"  {defect:16s} {count:5d} {before[defect][0]:15.3f} {share:14.3f}")
    print(
        f"  render + FaceMesh {t1 - t0:.1f} s; drawing {1000 * (t2 - t1) / n:.2f} ms/img without the check, "
        f"{1000 * (t3 - t2) / n:.2f} ms/img with it"
    )


def bench_real(parser, limits, n):
    from PIL import Image

    from tests.helpers.visibility_rates import find_landmarks, rejected

    paths = sorted(PHOTOS.glob("*"))
    if not paths:
        sys.exit(f"bench needs the shared photos at {PHOTOS}")
    chosen = sorted(np.random.default_rng(0).choice(len(paths), min(n, len(paths)), replace=False))
    images = [np.asarray(Image.open(paths[i])) for i in chosen]
    landmarks = find_landmarks(parser, images)
    before = rejected(parser, images, landmarks, None)
    after = rejected(parser, images, landmarks, limits)
    print(
        f"real photos (facial_expressions, {len(images)} drawn with seed 0): share rejected "
        f"{before.mean():.3f} landmarks only, {after.mean():.3f} visibility on"
    )
    newly = [paths[i].name for i, b, a in zip(chosen, before, after) if a and not b]
    print(f"  newly rejected ({len(newly)}): {' '.join(newly)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", type=int, default=500, help="real photos to sample (0: none)")
    args = ap.parse_args()

    from stages.lib.parsing.facemesh import FaceMeshParser
    from stages.lib.quiet import quiet_stderr

    limits = limits_from_params()
    with quiet_stderr():
        parser = FaceMeshParser(min_detect_size=192, visibility=limits)
    try:
        with quiet_stderr():  # MediaPipe's C++ log lines; the results go to stdout
            if args.n:
                bench_demo(parser, limits, args.n, args.size, args.seed)
            if args.real:
                bench_real(parser, limits, args.real)
    finally:
        parser.close()


if __name__ == "__main__":
    main()
