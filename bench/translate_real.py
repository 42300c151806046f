"""The translators on real photos, trained on a CPU: ../shared/data/facial_expressions curated by the pipeline's own
stages, then mouth, eyes and face trained with the real-data recipe below and evaluated (every number with its 95%
interval). The demo recipe (params.yaml) is tuned for drawn faces and a 4-minute DAG; this one for photos.

Run from the project root:  python bench/translate_real.py [--out bench/results/translate_real] [-S key=value ...]
    python bench/translate_real.py -S train.epochs.mouth=60     # any params.yaml key, on top of RECIPE
    python bench/translate_real.py --until extract_rois         # curate once, keep the scratch project to iterate in
It runs bench/evaluate_real.py's scratch copy (a fresh clone's view, ingest on the photos' legend.csv) with RECIPE
applied, prints the summarize_eval table and writes metrics to --out and the evaluation pictures to --out/pictures/
(git-ignored: they show the shared photos). Each ROI trains for about RECIPE_MINUTES on two cores.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_real import ROOT, main as run_main  # noqa: E402

# Chosen by measurement on these photos (bench/README.md, "Translators on real photos"): 64-pixel eyes and mouth with
# the recipe's two downsamplings, a 128-pixel face.
RECIPE = {
    "rois.side": {"eyes": 64, "mouth": 64, "face": 128},
    "train.n_down": {"eyes": 2, "mouth": 2, "face": 2},
    "train.n_layers": {"eyes": 2, "mouth": 2, "face": 3},
    "train.n_blocks": {"eyes": 4, "mouth": 4, "face": 4},
    "train.ngf": 32,
    "train.ndf": 32,
    "train.lr": 0.0005,
    "train.batch": {"eyes": 4, "mouth": 4, "face": 4},
    "train.epochs": {"eyes": 20, "mouth": 40, "face": 12},
    "train.epochs_decay": {"eyes": 10, "mouth": 20, "face": 6},
}
RECIPE_MINUTES = {"eyes": 10, "mouth": 20, "face": 25}


def main():
    run_main(RECIPE, os.path.join(ROOT, "bench", "results", "translate_real"), __doc__)


if __name__ == "__main__":
    main()
