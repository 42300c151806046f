"""Both filters on the real photos of ../shared/data/facial_expressions, with the pipeline's library functions.

Run from the project root:  python bench/curator.py [--input grey|grey_masks] [--backbone judge|scratch]
Steps: FaceMesh parse of every photo -> filter_masks' rule (default params) -> curator cross-fitted on the kept faces
(params.yaml's curator block, input/backbone overridable) -> filter_emotion's rules. Prints the curator's
out-of-fold accuracy on neutral vs happy, the judge's accuracy on the same faces (neutral vs happy probabilities
compared), and how many photos each filter removes, by reason. Duplicate image names with disagreeing labels are
dropped first, as ingest would keep one file once. Also the judge's agreement with the labels before and after
filter_emotion (how much curation pre-selects faces that judge reads right). Takes a few minutes on two cores.
"""

import argparse
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from stages.lib import params as P  # noqa: E402
from stages.lib.boxes import face_crop  # noqa: E402
from stages.lib.codec import decode_image, to_grey  # noqa: E402
from stages.lib.curator import CuratorConfig, cross_fit, face_inputs, judge_features  # noqa: E402
from stages.lib.judge import judge_probs, load_judge  # noqa: E402
from stages.lib.label_issues import class_index, curator_classes, decide, find_issues, judge_to_classes  # noqa: E402  # noqa: E402
from stages.lib.labels import canonical_emotion  # noqa: E402
from stages.lib.masks import counts_matrix, visibility_reasons  # noqa: E402
from stages.lib.parsing.facemesh import FaceMeshParser  # noqa: E402
from stages.lib.parsing.labelmap import class_counts  # noqa: E402
from stages.lib.quiet import quiet_stderr  # noqa: E402

DATA = "../shared/data/facial_expressions"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", choices=["grey", "grey_masks"])
    ap.add_argument("--backbone", choices=["judge", "scratch"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = P.load()
    cur = params["curator"]
    backbone, inp = args.backbone or cur["backbone"], args.input or cur["input"]
    legend = pd.read_csv(os.path.join(DATA, "legend.csv"))
    legend["label"] = legend.emotion.map(canonical_emotion)
    legend = legend.drop_duplicates(["image", "label"]).drop_duplicates("image", keep=False)
    legend = legend[legend.label.notna()].sort_values("image").reset_index(drop=True)
    greys, maps, boxes = parse_photos(legend, params)
    keep = mask_filter(maps, params)
    labels = legend.label.to_numpy()[keep].tolist()
    g, b = [greys[i] for i in keep], [boxes[i] for i in keep]
    m = [maps[i] for i in keep] if inp == "grey_masks" else None
    compare(params, backbone, inp, labels, g, b, m)


def parse_photos(legend, params):
    """(grey images, label maps, face boxes) of the photos, parsed with FaceMesh."""
    t0 = time.perf_counter()
    parser = FaceMeshParser(min_detect_size=params["parse"]["min_detect_size"])
    greys, maps, boxes = [], [], []
    with quiet_stderr():
        for name in legend.image:
            img = decode_image(open(os.path.join(DATA, "images", name), "rb").read())
            lm, box, _ = parser.parse(img)
            greys.append(to_grey(img))
            maps.append(lm)
            boxes.append(box)
    print(f"parsed {len(greys)} photos in {time.perf_counter() - t0:.0f}s")
    return greys, maps, boxes


def mask_filter(maps, params):
    """The indices filter_masks keeps, as its rule decides them."""
    counts = counts_matrix([class_counts(m) if m is not None else None for m in maps])
    fm = params["filter_masks"]
    kept, reasons, _, _ = visibility_reasons([m is not None for m in maps], counts, fm["min_px"], fm["ref_size"])
    print(
        f"filter_masks: kept {kept.sum()}/{len(kept)}, removed by reason "
        f"{dict(sorted(Counter(r for r in reasons if r).items()))}"
    )

    return np.flatnonzero(kept)


def compare(params, backbone, inp, labels, g, b, m):
    """The curator's and the judge's accuracy, and what filter_emotion keeps with either."""
    cur = params["curator"]
    src, tgt = params["emotions"]["source"], params["emotions"]["target"]
    classes = curator_classes(src, tgt, labels)
    y = class_index(labels, classes)
    t0 = time.perf_counter()
    x = judge_features(g, b, label_maps=m) if backbone == "judge" else face_inputs(g, b, cur["side"], m)
    cfg = CuratorConfig(cur["folds"], cur["epochs"], cur["batch"], cur["lr"], cur["seed"])
    probs, _ = cross_fit(x, y, len(classes), cfg)
    issue_filter = params["curator"]["issue_filter"]
    issues = find_issues(y, probs, issue_filter)
    st = y < 2
    acc = ((probs[st, 1] > probs[st, 0]).astype(int) == y[st]).mean()
    print(
        f"curator ({backbone}, {inp}): out-of-fold accuracy {src} vs {tgt} {acc:.3f} on {st.sum()} faces "
        f"({time.perf_counter() - t0:.0f}s), cleanlab label issues {issues.sum()}"
    )

    fer = judge_probs(load_judge(), [face_crop(im, bx) for im, bx in zip(g, b)])
    jp = judge_to_classes(fer, classes)
    jacc = ((jp[st, 1] > jp[st, 0]).astype(int) == y[st]).mean()
    print(f"judge: accuracy {src} vs {tgt} {jacc:.3f} on the same {st.sum()} faces")

    judge_agrees = (jp[:, 1] > jp[:, 0]).astype(int) == y
    for name, pr, iss in (("curator", probs, issues), ("judge", jp, find_issues(y, jp, issue_filter))):
        _, why, _ = decide(labels, classes, pr, iss, src, tgt, params["filter_emotion"]["min_confidence"])
        print(
            f"filter_emotion (classifier={name}): kept {why.count('')}/{len(why)}, removed by reason "
            f"{dict(sorted(Counter(r for r in why if r).items()))}"
        )
        # The pre-selection a judge-feature curator brings: how much more the judge agrees with the kept labels.
        kept_st = np.array([w == "" for w in why]) & st
        print(
            f"  judge-vs-label agreement ({src} vs {tgt}): {judge_agrees[st].mean():.3f} on all {st.sum()} faces, "
            f"{judge_agrees[kept_st].mean():.3f} on the {kept_st.sum()} kept"
        )


if __name__ == "__main__":
    main()
