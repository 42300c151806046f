"""Stage `parse`: every kept image of data/images -> one row of data/parsed/ with its canonical label map.

Run from the project root:  python -m stages.parse   (or `dvc repro parse`)
Reads params.yaml `parse:` (backend, weights, size, batch, device, min_detect_size, visibility, visibility_limits,
workers, engine); FACECUR_PARAMS names another params file. Paths can be overridden for experiments:
    python -m stages.parse --images data/images --out data/parsed --metrics metrics/parse.json \
        --plot plots/parse/contact_sheet.png
Writes: data/parsed/part-*.parquet, metrics/parse.json, plots/parse/contact_sheet.png.
A kept image with no face is a row with face_found=false; kept images in = rows out.
"""

import argparse
import contextlib
import sys

from stages.lib import params as P
from stages.lib import paths
from stages.lib.errors import run_stage
from stages.lib.parsing import check_model, make_parser, read_params
from stages.lib.parsing.runner import check_input, count_kept, parse_table
from stages.lib.parsing.workers import parse_table_workers, resolve_workers
from stages.lib.tables import save_png_atomic, write_json_atomic


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=paths.IMAGES)
    ap.add_argument("--out", default=paths.PARSED)
    ap.add_argument("--metrics", default=paths.metrics_file("parse"))
    ap.add_argument("--plot", default=f"{paths.plots_dir('parse')}/contact_sheet.png")
    args = ap.parse_args(argv)

    cfg = read_params(P.load(P.PARAMS_FILE))
    check_input(args.images)
    if cfg["backend"] == "facemesh" or cfg["engine"] == "ray":
        from stages.lib.quiet import quiet_stderr

        # MediaPipe's C++ log lines (and Ray's) stay out of the stage's output. Its graph opens its models in
        # background threads that may log after the constructor returns, so the parser is built inside the quiet
        # block too; worker processes and actors quiet their own stderr (workers.worker_parser).
        quiet = quiet_stderr()
    else:
        quiet = contextlib.nullcontext(sys.stderr)
    with quiet as progress:
        stats, sheet = run(args, cfg, progress)
    if cfg["backend"] != "facemesh":
        stats["parse_size"] = cfg["size"]
        stats["device"] = str(cfg["device"])
    write_json_atomic(stats, args.metrics)
    save_png_atomic(sheet, args.plot)
    print(
        f"parse[{cfg['backend']}]: {stats['faces_found']}/{stats['images']} faces found "
        f"({stats['images_per_s']} images/s, {stats['workers']} workers, {stats['engine']}) -> {args.out}",
        file=sys.stderr,
    )


def run(args, cfg, progress):
    """(stats, contact sheet) from the engine and worker count the params ask for (see stages/lib/parsing)."""
    if cfg["engine"] == "ray":
        from stages.lib.parsing.ray_engine import parse_table_ray

        check_model(cfg)
        return parse_table_ray(args.images, args.out, cfg, progress=progress)
    workers = resolve_workers(cfg, count_kept(args.images))
    if workers > 1:
        check_model(cfg)
        return parse_table_workers(args.images, args.out, cfg, workers, progress=progress)
    parser = make_parser(cfg)  # a missing weights file stops here, before any image is read
    return parse_table(args.images, args.out, parser, batch_rows=cfg["batch"], progress=progress)


if __name__ == "__main__":
    run_stage(main)
