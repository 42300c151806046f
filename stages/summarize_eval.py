"""Print the overlay evaluation of every ROI as one markdown table (no DVC stage: it only reads eval/*/metrics.json).

    python -m stages.summarize_eval                  # table to stdout
    python -m stages.summarize_eval --out eval/summary.md

`dvc metrics show` gives the same numbers; this table puts the ROIs side by side with the headline columns first.
"""
import argparse
import glob
import json
import os
import sys

from .lib.errors import StageError, run_stage
from .lib.tables import write_bytes_atomic

COLUMNS = ["n_test", "transfer_rate", "baseline_rate", "transfer_gain", "transfer_rate_binary",
           "baseline_rate_binary", "target_prob_gain", "curator_transfer_rate", "kid_roi", "brightness_shift",
           "brightness_shift_raw", "psnr_roi", "ssim_roi", "psnr_image", "ssim_image", "outside_changed_px"]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(folder="eval") -> str:
    paths = sorted(glob.glob(os.path.join(folder, "*", "metrics.json")))
    if not paths:
        raise StageError(f"no {folder}/<roi>/metrics.json found; run `dvc repro` (the evaluate stages) first")
    lines = ["| roi | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for path in paths:
        try:
            with open(path) as f:
                metrics = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise StageError(f"{path} is unreadable: {err}") from None
        roi = os.path.basename(os.path.dirname(path))
        lines.append(f"| {roi} | " + " | ".join(_cell(metrics.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m stages.summarize_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default="eval", help="folder holding <roi>/metrics.json")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    table = summary_table(args.eval)
    sys.stdout.write(table)
    if args.out:
        write_bytes_atomic(table.encode(), args.out)


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
