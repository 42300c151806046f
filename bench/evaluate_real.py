"""The whole DAG on the real photos of ../shared/data/facial_expressions, in a scratch copy of the project, and its
evaluation table (every number with its 95% interval).

Run from the project root:  python bench/evaluate_real.py [--out bench/results/real] [-S key=value ...]
    python bench/evaluate_real.py -S train.epochs.mouth=40          # any params.yaml key, as dvc exp run -S takes it
It copies the tracked files to a temporary folder (a fresh clone's view), points ingest at the photos
(`labelled_folder`, legend.csv), keeps every other param of params.yaml (the demo recipe: 32 px eyes and mouth,
64 px face), runs `dvc repro`, and copies eval/*/metrics.json and the summary to --out, and the evaluation pictures
to --out/pictures/ (git-ignored: they show the shared photos, which stay in ../shared/data).
About 10 minutes on two cores.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "facial_expressions"))
REAL = {"ingest.source": "labelled_folder", "ingest.path": PHOTOS, "ingest.image_column": "image",
        "ingest.label_column": "emotion"}


def set_key(params: dict, dotted: str, value):
    node = params
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def copy_project(dest: str):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        src = os.path.join(ROOT, name)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, name)) or dest, exist_ok=True)
            shutil.copy2(src, os.path.join(dest, name))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=bench", "-c", "user.email=bench@localhost",
                                                  "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "real"))
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", action="store_true", help="keep the scratch project (its path is printed)")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(PHOTOS, "legend.csv")):
        sys.exit(f"bench/evaluate_real.py: the real photos are missing at {PHOTOS}")
    work = tempfile.mkdtemp(prefix="facecur-real-")
    project = os.path.join(work, "main")
    copy_project(project)
    with open(os.path.join(project, "params.yaml")) as f:
        params = yaml.safe_load(f)
    for key, value in REAL.items():
        set_key(params, key, value)
    for item in args.overrides:
        key, _, value = item.partition("=")
        set_key(params, key, yaml.safe_load(value))
    with open(os.path.join(project, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    print(f"scratch project: {project}", file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.run(["dvc", "repro"], cwd=project)
    if proc.returncode:
        sys.exit(f"bench/evaluate_real.py: dvc repro failed ({proc.returncode}) in {project}")
    wall = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(os.path.join(args.out, "pictures"), exist_ok=True)
    for roi in params["rois"]["names"]:
        os.makedirs(os.path.join(args.out, roi), exist_ok=True)
        shutil.copy2(os.path.join(project, "eval", roi, "metrics.json"), os.path.join(args.out, roi))
        shutil.copy2(os.path.join(project, "plots", "evaluate", f"{roi}.png"),
                     os.path.join(args.out, "pictures", f"{roi}.png"))
    shutil.copy2(os.path.join(project, "plots", "evaluate", "summary.png"), os.path.join(args.out, "summary.png"))
    for name in ("ingest", "filter_masks", "train_curator", "filter_emotion", "extract_rois"):
        shutil.copy2(os.path.join(project, "metrics", f"{name}.json"), os.path.join(args.out, f"{name}.json"))
    table = subprocess.run([sys.executable, "-m", "stages.summarize_eval", "--eval", args.out],
                           cwd=project, capture_output=True, text=True, check=True).stdout
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"dvc repro on the real photos: {wall:.0f} s wall; results in {args.out}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
