"""How the curation stages scale: ingest through extract_rois on N = 2k and 20k unique real-looking faces.

Run from the project root:  python bench/scale.py [--sizes 2000 20000] [--work /tmp/facecur-scale]
For each N it builds a labelled folder of N JPEGs: the photos of ../shared/data/facial_expressions, with their
legend's labels, repeated; every copy is moved by a seeded shift of up to 2 px and a small brightness step, so each
file has its own content id. It then runs each stage the way DVC does (python -m stages.<name>) in a scratch project
and records, per stage, wall time, CPU time (the stage and its worker processes) and peak RSS (the largest process).
Prints, per stage, the time per image at each N and their ratio (1.0 is linear; goal within 10%), the peak RSS ratio
(goal at most 1.2) and the largest N's peak RSS (goal under 1 GB at 20k), then data/images bytes per source byte
(goal at most 1.15 for JPEG sources).
"""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.lib.image_issues import ISSUES  # noqa: E402
from tests.helpers.stage_runner import scratch_project  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "facial_expressions"
STAGES = ("ingest", "parse", "filter_quality", "filter_masks", "train_curator", "filter_emotion", "extract_rois")
SHIFTS = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]


def jittered(image: np.ndarray, shift, brightness: int) -> np.ndarray:
    """`image` moved by `shift` pixels (edges repeated) and brightened by `brightness` grey levels."""
    dx, dy = shift
    h, w = image.shape[:2]
    padded = np.pad(image, [(2, 2), (2, 2)] + [(0, 0)] * (image.ndim - 2), mode="edge")
    moved = padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return np.clip(moved.astype(np.int16) + brightness, 0, 255).astype(np.uint8)


def build_folder(n: int, folder: Path, seed: int = 0) -> int:
    """N jittered copies of the shared photos with a legend.csv; returns the JPEG bytes written."""
    with open(PHOTOS / "legend.csv", newline="") as f:
        legend = [(r["image"], r["emotion"]) for r in csv.DictReader(f) if (PHOTOS / "images" / r["image"]).is_file()]
    legend = sorted(set(legend))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plans = {name: iter(rng.permutation(len(SHIFTS) * 8)) for name, _ in legend}
    total, rows = 0, []
    for k in range(n):
        name, label = legend[k % len(legend)]
        combo = int(next(plans[name]))
        image = np.asarray(Image.open(PHOTOS / "images" / name).convert("RGB"))
        out = jittered(image, SHIFTS[combo % len(SHIFTS)], 1 + combo // len(SHIFTS))
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=92)
        file = f"{k:06d}_{name}"
        (folder / "images" / file).write_bytes(buffer.getvalue())
        total += len(buffer.getvalue())
        rows.append((file, label))
    with open(folder / "legend.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "emotion"), *rows])
    return total


def run_measured(project: Path, stage: str) -> dict:
    """One stage as a child process: wall seconds, CPU seconds of it and its children, peak RSS in MB."""
    env = dict(os.environ, PYTHONPATH=str(project))
    log = project / f"{stage}.log"
    start = time.perf_counter()
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the child while we wait on it
        proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: stages.{stage} failed in {project}: {log.read_text().strip().splitlines()[-1:]}")
    # ru_maxrss of a waited child is the largest resident set of it and its waited-for descendants, in KiB
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(n: int, work: Path) -> dict:
    source = work / f"faces_{n}"
    source_bytes = build_folder(n, source) if not (source / "legend.csv").is_file() else None
    if source_bytes is None:
        source_bytes = folder_bytes(source / "images")
    # The copies are jittered near duplicates of each other by design: filter_quality checks every issue but rejects
    # none, so the later stages see every copy.
    quality = {"reject": [], "report": list(ISSUES)}
    overrides = {"ingest": {"source": "labelled_folder", "path": str(source)}, "filter_quality": quality}
    project = scratch_project(work / f"project_{n}", overrides)
    stages = {}
    for stage in STAGES:
        stages[stage] = run_measured(project, stage)
        print(f"N={n} {stage}: {json.dumps({k: round(v, 1) for k, v in stages[stage].items()})}", flush=True)
    images = folder_bytes(project / "data" / "images")
    return {"n": n, "stages": stages, "source_bytes": source_bytes, "images_bytes": images,
            "data_bytes": folder_bytes(project / "data")}  # fmt: skip


def report(small: dict, large: dict):
    ratio = large["n"] / small["n"]
    print(f"\nper stage, N={small['n']} -> N={large['n']} ({ratio:.0f}x the images):")
    print(f"{'stage':15s} {'ms/img small':>12s} {'ms/img large':>12s} {'time ratio':>10s} {'cpu ratio':>9s} "
          f"{'RSS small':>9s} {'RSS large':>9s} {'RSS ratio':>9s}")  # fmt: skip
    for stage in STAGES:
        a, b = small["stages"][stage], large["stages"][stage]
        per = lambda m, key, r: 1000 * m[key] / r["n"]  # noqa: E731
        print(
            f"{stage:15s} {per(a, 'wall_s', small):12.2f} {per(b, 'wall_s', large):12.2f} "
            f"{per(b, 'wall_s', large) / per(a, 'wall_s', small):10.2f} "
            f"{per(b, 'cpu_s', large) / per(a, 'cpu_s', small):9.2f} "
            f"{a['peak_mb']:8.0f}M {b['peak_mb']:8.0f}M {b['peak_mb'] / a['peak_mb']:9.2f}"
        )
    for run in (small, large):
        print(
            f"N={run['n']}: data/images {run['images_bytes'] / 2**20:.0f} MB for {run['source_bytes'] / 2**20:.0f} MB "
            f"of source JPEGs ({run['images_bytes'] / run['source_bytes']:.2f} bytes per source byte); all of data/ "
            f"{run['data_bytes'] / run['source_bytes']:.2f}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/facecur-scale"))
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"error: the shared photos are not at {PHOTOS}")
    small, large = (measure(n, args.work) for n in sorted(args.sizes))
    report(small, large)


if __name__ == "__main__":
    main()
