"""How much a translator's evaluation moves with the training seed, for the last weights and for their moving average.

One ROI of the demo is trained once per seed with `train.ema.<roi>` set; each run is evaluated twice, paired: with
the averaged G_AB the stage writes, and with the last G_AB, taken from the same run's checkpoint. The --metric
numbers (the judge's transfer_gain by default; 95% interval, n) of both, per seed, and their spread over the seeds
are printed and appended to bench/results/train_seeds.txt.

Run in a project whose data stages are done (a fresh clone after `dvc repro extract_rois`), from this checkout:
    python bench/train_seeds.py --project /tmp/demo --roi mouth --seeds 0 1 2 --ema 0.995
    python bench/train_seeds.py --project /tmp/demo --roi eyes --ema 0.99 --metric target_prob_gain --set train.lr=5e-4
    python bench/train_seeds.py --project /tmp/facecur-real-XXXX/main --metric transfer_share geometry_share \
        identity_kept_rate --out bench/results/train_seeds_real     # a `translate_real.py --until extract_rois` project
The project's params.yaml is changed for the runs and put back afterwards; its models/cyclegan/<roi>, eval/<roi>
and metrics are overwritten (`dvc repro` restores the committed ones from DVC's cache).
About 2.5 min per mouth seed and 3 min per face seed on 2 cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.lib.networks import generator_file  # noqa: E402


def set_key(params: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def stage(project: Path, *args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=project, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed in {project}:\n{proc.stderr[-2000:]}")


def evaluation(project: Path, roi: str) -> dict:
    stage(project, "stages.evaluate", roi)
    return json.loads((project / "eval" / roi / "metrics.json").read_text())


def run_seed(project: Path, roi: str, seed: int, ema: float, extra: dict) -> dict:
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    set_key(params, "train.seed", seed)
    set_key(params, f"train.ema.{roi}", ema)
    for key, value in extra.items():
        set_key(params, key, value)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    model_dir = project / "models" / "cyclegan" / roi
    shutil.rmtree(model_dir, ignore_errors=True)
    started = time.perf_counter()
    stage(project, "stages.train", roi)
    seconds = time.perf_counter() - started
    averaged = evaluation(project, roi)
    # The same run's last weights, in the file layout evaluate reads.
    saved = torch.load(model_dir / "generator_AB.pt", weights_only=True)
    last = torch.load(model_dir / "checkpoint.pt", weights_only=True)["model"]["nets"]["G_AB"]
    torch.save(generator_file(saved["config"], last), model_dir / "generator_AB.pt")
    return {"seed": seed, "train_s": round(seconds, 1), "ema": averaged, "last": evaluation(project, roi)}


def describe(name: str, rows: list, metric: str) -> str:
    if any(r[name].get(metric) is None for r in rows):
        return f"{name:>4} {metric}: not in this evaluation (e.g. evaluate.identity off)"
    gains = [r[name][metric] for r in rows]
    cells = ", ".join(
        f"seed {r['seed']} {r[name][metric]:.3f} [{r[name][metric + '_ci'][0]:.3f}, {r[name][metric + '_ci'][1]:.3f}]"
        for r in rows
    )
    spread = f"; mean {statistics.mean(gains):.3f}, min {min(gains):.3f}, sd {statistics.pstdev(gains):.3f}"
    return f"{name:>4} {metric}: {cells}{spread if len(gains) > 1 else ''}"


# Metrics with a `<name>_ci` interval in eval/<roi>/metrics.json that this comparison can report.
METRICS = [
    "transfer_gain",
    "target_prob_gain",
    "transfer_share",
    "geometry_gain",
    "geometry_share",
    "identity_kept_rate",
]


def cpu_name() -> str:
    """The CPU's name, family and model, and whether it has AVX-512: what decides a float result's last bits."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    avx512 = ", AVX-512" if "avx512f" in fields.get("flags", "").split() else ""
    name = fields.get("model name", "unknown CPU")
    return f"{name}, family {fields.get('cpu family')} model {fields.get('model')}{avx512}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--roi", default="mouth")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--metric", nargs="+", default=["transfer_gain"], choices=METRICS)
    ap.add_argument("--out", type=Path, help="also keep each evaluation's metrics.json here, by seed and weights")
    ap.add_argument("--set", action="append", default=[], help="extra params as dotted.key=value (YAML value)")
    args = ap.parse_args()
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    params_file = args.project / "params.yaml"
    original = params_file.read_text()
    try:
        rows = [run_seed(args.project, args.roi, seed, args.ema, extra) for seed in args.seeds]
    finally:
        params_file.write_text(original)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for r in rows:
            for name in ("ema", "last"):
                path = args.out / f"{args.roi}_seed{r['seed']}_{name}.json"
                path.write_text(json.dumps(r[name], indent=2, sort_keys=True) + "\n")
    n = rows[0]["ema"]["n_test"]
    lines = [
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.uname().nodename} "
        f"({cpu_name()}, {os.cpu_count()} CPUs): {args.project}: "
        f"{args.roi}, ema {args.ema}, extra {extra or 'none'}; [95% interval], n={n}; "
        f"train s per seed {[r['train_s'] for r in rows]}",
    ]
    lines += [describe(name, rows, metric) for metric in args.metric for name in ("ema", "last")]
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / "train_seeds.txt"
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
