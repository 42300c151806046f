"""Judge pseudo-labels (`ingest.source: image_folder`) on the real photos with their labels hidden, scored against
legend.csv.

Run from the project root:  python bench/pseudo_labels.py [--out bench/results/pseudo_labels.txt] [--keep]
In a scratch copy of the project (bench/evaluate_real.py's), ingest reads ../shared/data/facial_expressions/images as
an unlabelled image_folder (the pipeline never sees legend.csv) and `dvc repro filter_emotion` runs the chain to
filter_emotion: ingest with the judge's pseudo-labels, parse, filter_quality, filter_masks, train_curator (trained on
the pseudo-labels), filter_emotion. filter_emotion then reruns at other filter_emotion.min_pseudo_confidence values
(`python -m stages.filter_emotion` in the scratch project), the last run at params.yaml's value. The legend's labels,
mapped to canonical names (stages/lib/labels.py), score:
- the pseudo-labels of every photo ingest kept (7 classes);
- the faces filter_emotion keeps: agreement of their pseudo-label with the legend, overall and per pseudo class, and
  how many of the photos the legend calls neutral or happy end up kept as such.
Intervals are 95% Wilson intervals (bench/quality.py). A few minutes on two cores (parse is most of it).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import yaml
from evaluate_real import PHOTOS, ROOT, repro, scratch_project
from quality import rate

from stages.lib.labels import canonical_emotion

SWEEP = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def legend_labels() -> dict:
    """{file name: canonical label} from legend.csv (a name listed twice carries one label there)."""
    legend = pd.read_csv(os.path.join(PHOTOS, "legend.csv"))
    legend["label"] = legend.emotion.map(canonical_emotion)
    legend = legend.drop_duplicates(["image", "label"])
    assert not legend.image.duplicated().any(), "legend.csv names a photo twice with two labels"
    return dict(zip(legend.image, legend.label))


def filter_emotion(project: str, threshold: float, truth: dict, images: pd.DataFrame) -> tuple:
    """Rerun filter_emotion at min_pseudo_confidence=`threshold`: (its table joined with the legend, its metrics)."""
    path = os.path.join(project, "params.yaml")
    with open(path) as f:
        params = yaml.safe_load(f)
    params["filter_emotion"]["min_pseudo_confidence"] = threshold
    with open(path, "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    subprocess.run([sys.executable, "-m", "stages.filter_emotion"], cwd=project, check=True, capture_output=True)
    fe = pd.read_parquet(os.path.join(project, "data", "filtered", "filter_emotion.parquet"))
    fe["truth"] = fe.id.map(images.set_index("id").source_key).map(truth)
    with open(os.path.join(project, "metrics", "filter_emotion.json")) as f:
        return fe, json.load(f)


def agreement_lines(fe: pd.DataFrame, source: str, target: str) -> list:
    kept = fe[fe.kept]
    agree = rate((kept.label == kept.truth).sum(), len(kept))
    lines = [f"  kept {len(kept)}/{len(fe)}; pseudo-label = legend label: {agree}"]
    for cls in (source, target):
        mine = kept[kept.label == cls]
        lines.append(f"  kept as {cls}: legend agrees {rate((mine.truth == cls).sum(), len(mine))}")
        lines.append(f"    legend's {cls} photos kept as {cls}: {(mine.truth == cls).sum()}")
    legend_of = Counter(kept.truth.fillna("none"))
    lines.append(f"  legend labels of the kept faces: {dict(sorted(legend_of.items()))}")
    return lines


def ingest_lines(images: pd.DataFrame, truth: dict) -> list:
    kept = images[images.kept].copy()
    kept["truth"] = kept.source_key.map(truth)
    lines = [
        f"ingest: {len(kept)}/{len(images)} kept, rejected {dict(Counter(images.reason[~images.kept]))}",
        f"  pseudo-label = legend label (7 classes): {rate((kept.label == kept.truth).sum(), len(kept))}",
        f"  pseudo-labels: {dict(sorted(Counter(kept.label).items()))}",
        f"  label_prob quartiles: {[round(q, 3) for q in kept.label_prob.quantile([0.25, 0.5, 0.75])]}",
    ]
    for cls, rows in sorted(kept.groupby("truth")):
        lines.append(f"  legend {cls}: read as {cls} {rate((rows.label == cls).sum(), len(rows))}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "pseudo_labels.txt"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch project (its path is printed)")
    args = ap.parse_args()
    images_dir = os.path.join(PHOTOS, "images")
    project, params = scratch_project({"ingest.source": "image_folder", "ingest.path": images_dir})
    default = params["filter_emotion"]["min_pseudo_confidence"]
    wall = repro(project, "filter_emotion")
    truth = legend_labels()
    images = pd.read_parquet(os.path.join(project, "data", "images"))
    source, target = params["emotions"]["source"], params["emotions"]["target"]
    with open(os.path.join(project, "metrics", "train_curator.json")) as f:
        curator = json.load(f)
    lines = [
        f"python bench/pseudo_labels.py   # {time.strftime('%Y-%m-%d')}, 2-core dev VM, no GPU; dvc repro {wall:.0f} s",
        *ingest_lines(images, truth),
        f"train_curator on the pseudo-labels: classes {curator['classes']}, out-of-fold accuracy "
        f"{curator['oof_accuracy']:.3f}, label issues {curator['label_issues']} {curator['label_issues_per_class']}",
    ]
    for threshold in [t for t in SWEEP if t != default] + [default]:
        fe, metrics = filter_emotion(project, threshold, truth, images)
        lines.append(f"filter_emotion min_pseudo_confidence={threshold}: removed {metrics['by_reason']}")
        lines += agreement_lines(fe, source, target)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    if not args.keep:
        shutil.rmtree(os.path.dirname(project))


if __name__ == "__main__":
    main()
