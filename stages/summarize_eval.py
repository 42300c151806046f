"""summarize_eval: the overlay evaluation of every ROI as one table and one picture, each number with its interval.

Run from the project root (DVC runs it after evaluate@*; it only reads eval/*/metrics.json):
    python -m stages.summarize_eval                  # the table to stdout
    python -m stages.summarize_eval --out bench/results/eval.md --plot bench/results/summary.png --eval eval

Columns are ROIs. Rows put what a researcher decides with first: the CNN judge's transfer gain against the oracle's
(a real target feature pasted the same way) and the control's (the identity generator), the landmark judge's gain,
and identity kept; KID and the pixel numbers come last. `plots/evaluate/summary.png` (a DVC plot, so
`dvc plots diff` compares runs) draws the gains with their 95% intervals.
"""

import argparse
import glob
import json
import os
import sys

from .lib.errors import StageError, run_stage
from .lib.figures import figure, save_figure
from .lib.paths import PATHS, plots_dir
from .lib.tables import write_bytes_atomic

PLOT = os.path.join(plots_dir("evaluate"), "summary.png")
# (row, metric): a metric with a `<metric>_ci` is printed as "value [lo, hi]".
ROWS = [
    ("n", "n_test"),
    ("transfer gain", "transfer_gain"),
    ("oracle", "oracle_transfer_gain"),
    ("share of oracle", "transfer_share"),
    ("control", "control_transfer_gain"),
    ("target p gain", "target_prob_gain"),
    ("geometry gain", "geometry_gain"),
    ("oracle geometry", "oracle_geometry_gain"),
    ("identity kept", "identity_kept_rate"),
    ("different faces 'same'", "identity_different_faces_kept_rate"),
    ("judge-label agreement", "judge_label_agreement"),
    ("transfer rate", "transfer_rate"),
    ("baseline", "baseline_rate"),
    ("curator rate", "curator_transfer_rate"),
    ("curator baseline", "curator_baseline_rate"),
    ("KID", "kid_roi"),
    ("KID control", "control_kid_roi"),
    ("outside px", "outside_changed_px"),
]
# What the picture draws, per ROI: (label, metric, colour).
BARS = [
    ("transfer gain", "transfer_gain", "#1f77b4"),
    ("oracle transfer gain", "oracle_transfer_gain", "#aec7e8"),
    ("control transfer gain", "control_transfer_gain", "#7f7f7f"),
    ("target p gain", "target_prob_gain", "#2ca02c"),
    ("geometry gain", "geometry_gain", "#ff7f0e"),
    ("oracle geometry gain", "oracle_geometry_gain", "#ffbb78"),
    ("identity kept", "identity_kept_rate", "#9467bd"),
]


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def cell(metrics: dict, key: str) -> str:
    ci = metrics.get(f"{key}_ci")
    text = _number(metrics.get(key))
    return f"{text} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else text


def read_metrics(folder="eval") -> dict:
    """{roi: metrics} from <folder>/<roi>/metrics.json, sorted by ROI name."""
    paths = sorted(glob.glob(os.path.join(folder, "*", "metrics.json")))
    if not paths:
        raise StageError(f"no {folder}/<roi>/metrics.json found; run `dvc repro` (the evaluate stages) first")
    out = {}
    for path in paths:
        try:
            with open(path) as f:
                out[os.path.basename(os.path.dirname(path))] = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise StageError(f"{path} is unreadable: {err}") from None
    return out


def summary_table(folder="eval") -> str:
    """Markdown: one row per number (ROWS), one column per ROI."""
    by_roi = read_metrics(folder)
    lines = ["| metric | " + " | ".join(by_roi) + " |", "|---" * (len(by_roi) + 1) + "|"]
    for name, key in ROWS:
        lines.append(f"| {name} (`{key}`) | " + " | ".join(cell(m, key) for m in by_roi.values()) + " |")
    return "\n".join(lines) + "\n"


def summary_plot(folder=PATHS["eval"], path=PLOT):
    """Grouped bars with 95% error bars, one group per ROI; returns the path."""
    import numpy as np

    by_roi = read_metrics(folder)
    rois = list(by_roi)
    width = 0.8 / len(BARS)
    fig, axes = figure(1.2 + 2.2 * len(rois), 4.2)
    ax = axes[0, 0]
    for k, (label, key, colour) in enumerate(BARS):
        xs, ys, lo, hi = [], [], [], []
        for i, roi in enumerate(rois):
            value, ci = by_roi[roi].get(key), by_roi[roi].get(f"{key}_ci")
            if value is None:
                continue
            xs.append(i + (k - (len(BARS) - 1) / 2) * width)
            ys.append(value)
            lo.append(value - ci[0] if ci else 0.0)
            hi.append(ci[1] - value if ci else 0.0)
        ax.bar(xs, ys, width, yerr=np.array([lo, hi]), capsize=2, color=colour, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(rois)), [f"{r}\nn={by_roi[r].get('n_test')}" for r in rois])
    ax.set_ylabel("gain or rate (95% interval)")
    ax.set_title("overlay evaluation: translator vs oracle vs identity control")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m stages.summarize_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default=PATHS["eval"], help="folder holding <roi>/metrics.json")
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--plot", help=f"also draw the bar chart here (DVC writes {PLOT})")
    args = parser.parse_args(argv)
    table = summary_table(args.eval)
    sys.stdout.write(table)
    if args.out:
        write_bytes_atomic(table.encode(), args.out)
    if args.plot:
        summary_plot(args.eval, args.plot)


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
