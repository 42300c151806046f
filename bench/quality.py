"""CleanVision's image-quality issues on the real photos: counts per issue, and the share of altered copies found.

Run from the project root:  python bench/quality.py [--copies 100] [--work /tmp/facecur-quality]
1. ingest ../shared/data/facial_expressions (labelled_folder) in a scratch project, then filter_quality with
   params.yaml's block: per issue the photos found and rejected, and the stage's wall time. Its contact sheets are
   left in <work>/photos/plots/filter_quality/ to look at.
2. The same photos plus, for each of the first --copies grey photos, every altered copy that
   tests/helpers/quality_variants.py makes (darkened, brightened, flattened, cut wide, blurred, the same pixels as
   PNG, a JPEG re-encode): per kind of copy the share CleanVision flags with its issue, and the share of the photos
   without copies flagged as a duplicate (95% Wilson intervals).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from stages.lib.image_issues import DUPLICATES, ISSUES, flag_column  # noqa: E402
from stages.lib.intervals import wilson  # noqa: E402
from tests.helpers.quality_variants import PHOTOS, VARIANTS, grey_and_colour, legend_rows, variant_folder  # noqa: E402
from tests.helpers.stage_runner import run_stage, scratch_project  # noqa: E402


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else "0/0"


def checked(project: Path, path) -> tuple:
    """Ingest `path` and run filter_quality in `project`: (images joined with its table, metrics, stage seconds)."""
    run_stage(project, "ingest")
    start = time.perf_counter()
    run_stage(project, "filter_quality")
    seconds = time.perf_counter() - start
    images = pd.read_parquet(project / "data" / "images", columns=["id", "source_key", "kept"])
    table = (
        images[images.kept]
        .drop(columns="kept")
        .merge(pd.read_parquet(project / "data" / "filtered" / "filter_quality.parquet"), on="id")
    )
    return table.set_index("source_key"), json.loads((project / "metrics" / "filter_quality.json").read_text()), seconds


def photos_alone(work: Path):
    project = scratch_project(work / "photos", {"ingest": {"source": "labelled_folder", "path": str(PHOTOS)}})
    table, metrics, seconds = checked(project, PHOTOS)
    print(f"1. facial_expressions: {metrics['input']} kept photos, filter_quality {seconds:.1f} s wall")
    print(f"   kept {metrics['kept']}, rejected {metrics['rejected']} {metrics['by_reason']}")
    for issue, entry in metrics["issues"].items():
        share = rate(entry["found"], metrics["input"])
        print(f"   {issue:17s} {entry['action']:6s} found {share}, rejected {entry['rejected']}")
    print(f"   sheets: {project / 'plots' / 'filter_quality'}")


def with_copies(work: Path, copies: int):
    rows = legend_rows()
    grey, _ = grey_and_colour(rows)
    altered = [name for name, _ in grey[:copies]]
    folder = work / "with_copies"
    shutil.rmtree(folder, ignore_errors=True)
    made = variant_folder(folder, rows, {variant: altered for variant in VARIANTS})
    project = scratch_project(work / "copies", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    table, metrics, seconds = checked(project, folder)
    print(f"\n2. the photos + {len(made)} altered copies of {copies} grey photos: {metrics['input']} images,", end=" ")
    print(f"filter_quality {seconds:.1f} s wall")
    for variant, (issue, _) in VARIANTS.items():
        names = [copy for copy, (v, _) in made.items() if v == variant and copy in table.index]
        flagged = int(table.loc[names, flag_column(issue)].sum())
        print(f"   {variant:6s} copies flagged {issue:17s} {rate(flagged, len(names))}")
    untouched = table.drop(index=[n for n in list(made) + altered if n in table.index])
    for issue in DUPLICATES:
        flagged = int(untouched[flag_column(issue)].sum())
        print(f"   photos without copies flagged {issue}: {rate(flagged, len(untouched))}")
    missing = [i for i in ISSUES if flag_column(i) not in table.columns]
    if missing:
        print(f"   (not checked with params.yaml's block: {', '.join(missing)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/facecur-quality"))
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"error: the shared photos are not at {PHOTOS}")
    photos_alone(args.work)
    with_copies(args.work, args.copies)


if __name__ == "__main__":
    main()
