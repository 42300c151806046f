"""filter_masks: keep faces whose eyes, brows and lips are really visible; reject the rest with a reason.

Run from the project root (DVC does this):  python -m stages.filter_masks
Reads   data/parsed (id, face_found, class_counts; label_map only for the sheets), data/images (sheet thumbnails),
        data/filtered/filter_quality.parquet (its rejects are rejected here with its reason, e.g. `dark`)
Params  filter_masks.ref_size, filter_masks.min_px.{eyes,brows,lips}, filter_masks.sheet_max
Writes  data/filtered/filter_masks.parquet  id, kept, reason, eyes_px, brows_px, lips_px, eyes_min, brows_min,
                                            lips_min, area (one row per parsed row: kept + rejected = input)
        metrics/filter_masks.json            input, kept, rejected, kept_fraction, by_reason, by_check
        plots/filter_masks/<check>.png       one contact sheet per single check (no_face, eyes_small, ...)

filter_quality runs beside parse on the kept images; its rejects join here because check_contract.py wants parse to
cover every kept image and this table every parsed row. They are not on this stage's sheets (filter_quality draws
its own).
"""

import glob
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .lib import params as P
from .lib import paths
from .lib.codec import decode_image, decode_png
from .lib.contact_sheet import contact_sheet, overlay_regions
from .lib.errors import StageError, run_stage
from .lib.masks import CHECKED_REGIONS, counts_matrix, split_reasons, visibility_reasons
from .lib.tables import kept_summary, load_faces, read_upstream, shard_paths, write_json_atomic, write_table_atomic


def read_params(params):
    ref_size = P.number(params, "filter_masks.ref_size", int, lo=1)
    min_px = {r: P.number(params, f"filter_masks.min_px.{r}", float, lo=0) for r in CHECKED_REGIONS}
    sheet_max = P.number(params, "filter_masks.sheet_max", int, lo=0, default=32)
    P.check_unknown(params, ["filter_masks"])
    return ref_size, min_px, sheet_max


def read_parsed(path):
    """(ids, face_found, class_counts, parse errors). `error` is our parser's extra column: a kept image it could not
    decode has no face *because* it is corrupt, and the reject should say so."""
    files = shard_paths(path)
    has_error = bool(files) and "error" in pq.read_schema(files[0]).names
    table = read_upstream(path, ["id", "face_found", "class_counts"] + ["error"] * has_error, "parse")
    ids = table.column("id").to_pylist()
    face = [bool(f) for f in table.column("face_found").to_pylist()]
    errors = [e or "" for e in table.column("error").to_pylist()] if has_error else [""] * len(ids)
    return ids, face, table.column("class_counts"), errors


def read_quality(ids) -> list:
    """filter_quality's reason for each of `ids` ('' where it kept the row); an id it lacks is one line naming it."""
    table = read_upstream(paths.FILTER_QUALITY, ["id", "kept", "reason"], "filter_quality")
    verdicts = dict(zip(table.column("id").to_pylist(), table.column("reason").to_pylist()))
    missing = [i for i in ids if i not in verdicts]
    if missing:
        raise StageError(
            f"{paths.FILTER_QUALITY} lacks {len(missing)} parsed ids (e.g. {missing[0]}); rerun filter_quality"
        )
    return [verdicts[i] or "" for i in ids]


def decide(ids, face, counts, ref_size, min_px, errors=None, quality=None) -> pa.Table:
    try:
        matrix = counts_matrix(counts)
    except ValueError as err:
        raise StageError(f"{paths.PARSED}: {err}") from None
    kept, reasons, got, need = visibility_reasons(face, matrix, min_px, ref_size)
    for i, error in enumerate(errors or []):
        if error:  # "corrupt_image: <detail>" from parse
            kept[i], reasons[i] = False, error.split(":", 1)[0]
    for i, reason in enumerate(quality or []):
        if reason:  # filter_quality judged the image itself, before any parse
            kept[i], reasons[i] = False, reason
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")  # rows sorted by id: same table every run
    cols = {
        "id": pa.array([ids[i] for i in order], pa.string()),
        "kept": pa.array(kept[order], pa.bool_()),
        "reason": pa.array([reasons[i] for i in order], pa.string()),
    }
    for j, region in enumerate(CHECKED_REGIONS):
        cols[f"{region}_px"] = pa.array(got[order, j], pa.int64())
        cols[f"{region}_min"] = pa.array(np.round(need[order, j], 3), pa.float64())
    cols["area"] = pa.array(matrix.sum(axis=1)[order], pa.int64())
    return pa.table(cols)


def summarise(table: pa.Table) -> dict:
    counts, reasons = kept_summary(table)
    by_check = Counter(c for r in reasons for c in split_reasons(r))
    return {**counts, "by_reason": dict(sorted(Counter(reasons).items())), "by_check": dict(sorted(by_check.items()))}


def write_sheets(table: pa.Table, sheet_max: int, skip=frozenset(), plots=paths.plots_dir("filter_masks")):
    """One sheet per single check, showing up to `sheet_max` rejected faces (lowest ids) with the regions tinted;
    the ids in `skip` (rejected upstream) are left out."""
    for stale in glob.glob(os.path.join(plots, "*.png")):
        os.unlink(stale)  # a check that no longer rejects anything must not leave last run's sheet behind
    rows = table.select(["id", "reason", "eyes_px", "brows_px", "lips_px"]).to_pylist()
    by_check = {}
    for row in (r for r in rows if r["id"] not in skip):
        for check in split_reasons(row["reason"]):
            by_check.setdefault(check, []).append(row)
    picks = {check: sorted(members, key=lambda r: r["id"])[:sheet_max] for check, members in by_check.items()}
    wanted = {r["id"] for members in picks.values() for r in members}
    faces = load_faces(wanted, ["image"], ["label_map"])
    for check, members in tqdm(sorted(picks.items()), desc="filter_masks sheets", unit="sheet"):
        thumbs, captions = [], []
        for r in members:
            face = faces.get(r["id"], {})
            if face.get("image") is None:
                continue
            img = decode_image(face["image"])
            lm = face.get("label_map")
            thumbs.append(overlay_regions(img, decode_png(lm) if lm else None))
            captions.append(f"e{r['eyes_px']} b{r['brows_px']} l{r['lips_px']}")
        contact_sheet(thumbs, captions, os.path.join(plots, f"{check}.png"))


def main():
    params = P.load()
    ref_size, min_px, sheet_max = read_params(params)
    ids, face, counts, errors = read_parsed(paths.PARSED)
    quality = read_quality(ids)
    table = decide(ids, face, counts, ref_size, min_px, errors, quality)
    write_table_atomic(table, paths.FILTER_MASKS)
    metrics = {**summarise(table), "filter_quality_rejected": sum(map(bool, quality))}
    write_json_atomic(metrics, paths.metrics_file("filter_masks"))
    write_sheets(table, sheet_max, skip={i for i, q in zip(ids, quality) if q})
    print(
        f"filter_masks: kept {metrics['kept']}/{metrics['input']} ({metrics['kept_fraction']:.1%}); "
        f"rejected by check {metrics['by_check']}"
    )


if __name__ == "__main__":
    run_stage(main)
