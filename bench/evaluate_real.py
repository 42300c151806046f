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
sys.path.insert(0, ROOT)
from tests.helpers.project_copy import copy_project  # noqa: E402

PHOTOS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "facial_expressions"))
# The demo's params.yaml leaves the identity judge off (dlib cannot tell drawn faces apart); on photos it is the point.
REAL = {
    "ingest.source": "labelled_folder",
    "ingest.path": PHOTOS,
    "ingest.image_column": "image",
    "ingest.label_column": "emotion",
    "evaluate.identity": True,
}


def set_key(params: dict, dotted: str, value):
    node = params
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def scratch_project(overrides: dict, project: str = None) -> tuple:
    """A scratch copy of the project pointed at the photos (or the one kept at `project` by an earlier --until), with
    `overrides` ({dotted key: value}) applied to its params.yaml; returns (its path, its params)."""
    if not os.path.isfile(os.path.join(PHOTOS, "legend.csv")):
        sys.exit(f"bench: the real photos are missing at {PHOTOS}")
    if project is None:
        project = os.path.join(tempfile.mkdtemp(prefix="facecur-real-"), "main")
        copy_project(ROOT, project)
    elif not os.path.isfile(os.path.join(project, "dvc.yaml")):
        sys.exit(f"bench: {project} is not a scratch project (no dvc.yaml)")
    with open(os.path.join(project, "params.yaml")) as f:
        params = yaml.safe_load(f)
    for key, value in {**REAL, **overrides}.items():
        set_key(params, key, value)
    with open(os.path.join(project, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    print(f"scratch project: {project}", file=sys.stderr)
    return project, params


def repro(project: str, *targets) -> float:
    """`dvc repro [targets]` in the project; its wall seconds. Exits with a one-line message on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", *targets], cwd=project)
    if proc.returncode:
        sys.exit(f"bench: dvc repro failed ({proc.returncode}) in {project}")
    return time.perf_counter() - t0


def run_real(overrides: dict, out: str, keep: bool = False, project: str = None) -> str:
    """The whole DAG on the photos with `overrides` (in the kept `project`, if given), its results copied to `out`;
    returns the summary table."""
    keep = keep or project is not None  # a project the caller kept is theirs to remove
    project, params = scratch_project(overrides, project)
    wall = repro(project)
    os.makedirs(os.path.join(out, "pictures"), exist_ok=True)
    edits = [
        name
        for name in params["rois"]["names"] + ["combined"]
        if os.path.isfile(os.path.join(project, "eval", name, "metrics.json"))
    ]
    for name in edits:
        os.makedirs(os.path.join(out, name), exist_ok=True)
        shutil.copy2(os.path.join(project, "eval", name, "metrics.json"), os.path.join(out, name))
        shutil.copy2(
            os.path.join(project, "plots", "evaluate", f"{name}.png"), os.path.join(out, "pictures", f"{name}.png")
        )
    shutil.copy2(os.path.join(project, "plots", "evaluate", "summary.png"), os.path.join(out, "summary.png"))
    for name in ("ingest", "filter_masks", "train_curator", "filter_emotion", "extract_rois") + tuple(
        f"train_{roi}" for roi in params["rois"]["names"]
    ):
        shutil.copy2(os.path.join(project, "metrics", f"{name}.json"), os.path.join(out, f"{name}.json"))
    table = subprocess.run(
        [sys.executable, "-m", "stages.summarize_eval", "--eval", out],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table)
    print(f"dvc repro on the real photos: {wall:.0f} s wall; results in {out}")
    if not keep:
        shutil.rmtree(os.path.dirname(project))
    return table


def parse_overrides(items) -> dict:
    pairs = [item.partition("=") for item in items]
    return {key: yaml.safe_load(value) for key, _, value in pairs}


def main(recipe=None, default_out=os.path.join(ROOT, "bench", "results", "real"), doc=__doc__):
    """The command line of this script and of bench/translate_real.py (which passes its recipe): `recipe` overrides
    come first, then every -S."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", action="store_true", help="keep the scratch project (its path is printed)")
    ap.add_argument("--until", metavar="STAGE", help="only `dvc repro STAGE` (e.g. extract_rois) and keep the project")
    ap.add_argument("--project", help="go on in the scratch project an earlier run kept (only changed stages rerun)")
    args = ap.parse_args()
    overrides = {**(recipe or {}), **parse_overrides(args.overrides)}
    if args.until:
        project, _ = scratch_project(overrides, args.project)
        print(f"dvc repro {args.until}: {repro(project, args.until):.0f} s; project kept at {project}")
        return
    print(run_real(overrides, args.out, args.keep, args.project))


if __name__ == "__main__":
    main()
