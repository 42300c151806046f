"""Peak RSS and CPU time of the stages that stream images, this checkout's stages/ against another's, alternated.

Run from the project root:
    git archive <ref> stages | tar -x -C /tmp/old
    python bench/stream_rss.py --old /tmp/old/stages [--repeats 2] [--n 750]
It builds, once, the scratch demo project of bench/evaluate_rss.py (--n faces through extract_rois, a mouth
translator trained for one epoch), then runs train_curator, filter_emotion, extract_rois and evaluate@mouth as DVC
does, each under both stages/ trees in turn, --repeats times. Per run: peak RSS (ru_maxrss of the stage and its
children), user and system CPU seconds, and the md5 of the stage's outputs, which must agree between the trees.
The children get the environment this script started with, so neither tree inherits the other's settings.
"""

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

START_ENV = dict(os.environ)  # before `stages` is imported: its package sets allocator options in os.environ
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluate_rss import build, link_stages  # noqa: E402

# Each stage's command line and the outputs whose bytes both trees must write alike.
STAGES = {
    "train_curator": (["train_curator"], ["data/filtered/curator_oof.parquet", "models/curator/curator.pt"]),
    "filter_emotion": (["filter_emotion"], ["data/filtered/filter_emotion.parquet"]),
    "extract_rois": (["extract_rois"], ["data/rois"]),
    "evaluate@mouth": (["evaluate", "mouth"], ["eval/mouth/metrics.json"]),
}


def outputs_md5(root: Path, outputs) -> str:
    digest = hashlib.md5()
    for out in outputs:
        path = root / out
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def run(root: Path, tree: Path, argv, outputs) -> tuple:
    link_stages(root, tree)
    env = dict(START_ENV, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{argv[0]}", *argv[1:]], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: stages.{argv[0]} failed under {tree} in {root}")
    return usage.ru_maxrss / 1024, usage.ru_utime, usage.ru_stime, outputs_md5(root, outputs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="the stages/ folder to compare against")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n", type=int, default=750, help="ingest.demo.n of the scratch project")
    ap.add_argument("--work", type=Path, default=Path("/tmp/facecur-evaluate-rss"))
    args = ap.parse_args()
    root = args.work / f"demo{args.n}"
    build(root, args.n)
    trees = {"this": (ROOT / "stages").resolve(), "old": args.old.resolve()}
    runs = {(stage, name): [] for stage in STAGES for name in trees}
    for _ in range(args.repeats):
        for stage, (argv, outputs) in STAGES.items():
            for name, tree in trees.items():
                runs[stage, name].append(run(root, tree, argv, outputs))
    link_stages(root, trees["this"])
    print(f"{'stage':15s} {'tree':5s} {'peak RSS MiB':>18s} {'user s':>14s} {'sys s':>12s}  outputs md5")
    for (stage, name), rs in runs.items():
        fmt = lambda k, f: " ".join(f % r[k] for r in rs)  # noqa: E731
        print(f"{stage:15s} {name:5s} {fmt(0, '%5.0f'):>18s} {fmt(1, '%5.1f'):>14s} {fmt(2, '%4.1f'):>12s}  "
              f"{' '.join(sorted({r[3] for r in rs}))}")  # fmt: skip


if __name__ == "__main__":
    main()
