"""Calibrate the evaluation's two CNN-free measures on the real photos of ../shared/data/facial_expressions.

Run from the project root:  python bench/judges.py [--limit N] [--resamples 2000]
1. Identity (stages/lib/identity.py): dlib embeddings from FaceMesh's face box, for every photo whose name is
   <Person_Name>_<NNNN>.jpg. Distances between different photos of one person vs between different people: their
   quantiles, the share below dlib's 0.6, and the pair accuracy at 0.6.
2. Geometry judge (stages/lib/geometry.py): each landmark measure's and each ROI score's neutral-vs-happy AUC, with a
   95% stratified bootstrap interval.
Photos are parsed once (FaceMesh, as the parse stage's default); about 1 minute per 1,000 photos on two cores.
"""

import argparse
import csv
import os
import re
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from stages.lib.boxes import mask_bbox  # noqa: E402
from stages.lib.codec import decode_image  # noqa: E402
from stages.lib.geometry import SCORES, auc, expression_features, expression_score  # noqa: E402
from stages.lib.identity import SAME_PERSON, IdentityEmbedder  # noqa: E402
from stages.lib.labels import canonical_emotion  # noqa: E402
from stages.lib.parsing.facemesh import FaceMeshParser  # noqa: E402
from stages.lib.quiet import quiet_stderr  # noqa: E402

PHOTOS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "facial_expressions")
PERSON = re.compile(r"^(?P<person>.+)_\d{4}\.jpg$")


def read_legend(limit):
    """(name, canonical label) per distinct image name; names listed twice with different labels are left out."""
    labels = defaultdict(set)
    with open(os.path.join(PHOTOS, "legend.csv"), newline="") as f:
        for row in csv.DictReader(f):
            labels[row["image"]].add(canonical_emotion(row["emotion"]))
    rows = sorted((name, next(iter(ls))) for name, ls in labels.items() if len(ls) == 1)
    return rows[:limit] if limit else rows


def parse_all(rows):
    """Per photo: (image, face box, landmark pixels) or None when FaceMesh finds no face."""
    parser = FaceMeshParser(visibility=None)
    out = []
    with quiet_stderr():
        for name, _ in rows:
            with open(os.path.join(PHOTOS, "images", name), "rb") as f:
                image = decode_image(f.read())
            rgb, _ = parser.detection_input(image)
            pts = parser.landmarks(rgb)
            if pts is None:
                out.append(None)
                continue
            pixels = pts * [image.shape[1], image.shape[0]]
            label_map, _ = parser.draw(pts, image.shape[0], image.shape[1])
            out.append((image, mask_bbox(label_map > 0), pixels))
    parser.close()
    return out


def identity_calibration(rows, parsed, seed=0):
    embedder = IdentityEmbedder()
    by_person = defaultdict(list)
    for (name, _), p in zip(rows, parsed):
        m = PERSON.match(name)
        if m and p is not None:
            by_person[m.group("person")].append(embedder.embed(p[0], p[1]))
    same = [float(np.linalg.norm(a - b)) for es in by_person.values() for i, a in enumerate(es) for b in es[i + 1 :]]
    rng = np.random.default_rng(seed)
    people = list(by_person.values())
    n_diff = min(20000, max(len(same), 1000))
    diff = []
    while len(diff) < n_diff:
        i, j = rng.choice(len(people), 2, replace=False)
        a, b = people[i][rng.integers(len(people[i]))], people[j][rng.integers(len(people[j]))]
        diff.append(float(np.linalg.norm(a - b)))
    same, diff = np.array(same), np.array(diff)
    q = [5, 25, 50, 75, 95]
    print(
        f"\nidentity: {sum(len(v) for v in by_person.values())} named photos of {len(by_person)} people; "
        f"{len(same)} same-person pairs, {len(diff)} random different-person pairs"
    )
    print("| pairs | n | p5 | p25 | median | p75 | p95 | share below 0.6 |")
    print("|---|---|---|---|---|---|---|---|")
    for label, d in (("same person, other photo", same), ("different people", diff)):
        qs = " | ".join(f"{v:.3f}" for v in np.percentile(d, q))
        print(f"| {label} | {len(d)} | {qs} | {(d < SAME_PERSON).mean():.3f} |")
    acc = ((same < SAME_PERSON).mean() + (diff >= SAME_PERSON).mean()) / 2
    print(f"balanced pair accuracy at {SAME_PERSON}: {acc:.3f}")


def stratified_auc_ci(a, b, resamples, seed=0):
    rng = np.random.default_rng(seed)
    draws = [auc(rng.choice(a, len(a)), rng.choice(b, len(b))) for _ in range(resamples)]
    return np.percentile(draws, [2.5, 97.5])


def geometry_auc(rows, parsed, resamples):
    feats = {"neutral": [], "happy": []}
    for (_, label), p in zip(rows, parsed):
        if label in feats and p is not None:
            feats[label].append(expression_features(p[2]))
    print(f"\ngeometry judge: {len(feats['neutral'])} neutral, {len(feats['happy'])} happy photos with landmarks")
    print("| measure | AUC neutral vs happy | 95% interval |")
    print("|---|---|---|")
    measures = {name: (lambda f, k=name: f[k]) for name in ("mouth_width", "corner_lift")}
    measures["eye_aperture (minus)"] = lambda f: -f["eye_aperture"]
    for kind in sorted(set(SCORES.values())):
        rois = "/".join(r for r, k in SCORES.items() if k == kind)
        measures[f"score `{kind}` ({rois})"] = lambda f, k=kind: expression_score(f, k)
    for name, fn in measures.items():
        a = np.array([fn(f) for f in feats["neutral"]])
        b = np.array([fn(f) for f in feats["happy"]])
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        lo, hi = stratified_auc_ci(a, b, resamples)
        print(f"| {name} | {auc(a, b):.3f} | [{lo:.3f}, {hi:.3f}] |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="first N photos by name (0: all)")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    rows = read_legend(args.limit)
    t0 = time.perf_counter()
    parsed = parse_all(rows)
    found = sum(p is not None for p in parsed)
    print(f"{len(rows)} photos, FaceMesh found {found} faces in {time.perf_counter() - t0:.0f} s")
    identity_calibration(rows, parsed)
    geometry_auc(rows, parsed, args.resamples)


if __name__ == "__main__":
    main()
