"""Peak RSS and CPU time of evaluate@mouth as the number of test faces grows.

Run from the project root:
    python bench/evaluate_rss.py                                   # the working tree's stages/
    python bench/evaluate_rss.py --stages /tmp/old/stages          # another checkout's stages/, on the same data
    (git archive <ref> stages | tar -x -C /tmp/old gives one)
It builds, once, a scratch demo project of --n faces (ingest.demo.n) run through extract_rois with a mouth
translator trained for one epoch (about 5 min on the 2-core VM), then a copy whose kept mouth test rows (A and B) are
appended --copies more times under new ids (<id>-<k>) to data/images, data/parsed and data/rois/mouth.parquet, in
the same order, written with the project's own table writer. The copies are the same photos, so every number
repeats; only the count of test faces (and what a non-streamed reader holds) grows. Then, per project, it runs
`python -m stages.evaluate mouth` as DVC does, under /usr/bin/time, and prints the test faces, peak RSS, CPU and wall
time and the load average before the run, and the md5 of eval/mouth/metrics.json (compare it across --stages).
"""

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.lib.tables import read_table, write_table_atomic  # noqa: E402
from tests.helpers.demo_dag import CHAIN  # noqa: E402
from tests.helpers.stage_runner import run_stage, scratch_project  # noqa: E402


def build(root: Path, n: int):
    if (root / "models/cyclegan/mouth/generator_AB.pt").exists():
        return
    epochs = {"epochs": {"eyes": 3, "mouth": 1, "face": 12}, "epochs_decay": {"eyes": 1, "mouth": 1, "face": 4}}
    scratch_project(root, {"ingest": {"source": "demo", "demo": {"n": n, "side": 256, "seed": 0}}, "train": epochs})
    for stage in CHAIN:
        run_stage(root, stage)
    run_stage(root, "train", "mouth")


def grown(src: Path, dst: Path, copies: int):
    """`src` with its kept mouth test rows appended `copies` more times under new ids."""
    if (dst / "data/rois/mouth.parquet").exists():
        return
    dst.mkdir(parents=True)
    (dst / "params.yaml").symlink_to(src / "params.yaml")
    (dst / "models").symlink_to(src / "models")
    rois = read_table(str(src / "data/rois/mouth.parquet"))
    kept_test = pc.and_(pc.equal(rois["split"], "test"), pc.fill_null(rois["kept"], False))
    ids = rois.filter(kept_test)["id"]

    def grow(table):
        rows = table.filter(pc.is_in(table["id"], value_set=ids))
        at = rows.schema.get_field_index("id")
        renamed = [
            rows.set_column(at, "id", pc.binary_join_element_wise(rows["id"], f"-{k}", ""))
            for k in range(1, copies + 1)
        ]
        return pa.concat_tables([table, *renamed])

    for rel in ("data/images", "data/parsed"):
        write_table_atomic(grow(read_table(str(src / rel))), str(dst / rel / "part-00000.parquet"))
    write_table_atomic(grow(rois), str(dst / "data/rois/mouth.parquet"))


def link_stages(root: Path, stages: Path):
    """Point the project's stages/ at `stages`: the code the next stage run imports."""
    link = root / "stages"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(stages)


def measure(root: Path, stages: Path) -> str:
    link_stages(root, stages)
    load = os.getloadavg()[0]
    cmd = ["/usr/bin/time", "-f", "%M %U %S %e", sys.executable, "-m", "stages.evaluate", "mouth"]
    proc = subprocess.run(cmd, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    rss_kb, user, sys_s, wall = proc.stderr.strip().splitlines()[-1].split()
    n_test = pq.read_table(root / "data/rois/mouth.parquet", columns=["split", "domain"]).to_pylist()
    n_a = sum(1 for r in n_test if r == {"split": "test", "domain": "A"})
    md5 = hashlib.md5((root / "eval/mouth/metrics.json").read_bytes()).hexdigest()
    return (
        f"{root.name}: {n_a} test faces (A), peak RSS {int(rss_kb) / 1024:.0f} MB, "
        f"CPU {float(user) + float(sys_s):.0f} s, wall {float(wall):.0f} s, load before {load:.2f}, metrics md5 {md5}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="ingest.demo.n of the scratch project")
    ap.add_argument("--copies", type=int, default=3, help="extra copies of the test rows in the grown project")
    ap.add_argument("--work", type=Path, default=Path("/tmp/facecur-evaluate-rss"))
    ap.add_argument("--stages", type=Path, default=ROOT / "stages", help="the stages/ folder to measure")
    args = ap.parse_args()
    base, big = args.work / f"demo{args.n}", args.work / f"demo{args.n}x{args.copies + 1}"
    build(base, args.n)
    grown(base, big, args.copies)
    for root in (base, big):
        print(measure(root, args.stages.resolve()), flush=True)


if __name__ == "__main__":
    main()
