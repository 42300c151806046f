"""extract_rois: cut each curated face into fixed-size ROI crops (eyes, mouth, face) with paste-back alphas.

Run from the project root (DVC does this):  python -m stages.extract_rois
Reads   data/filtered/filter_emotion.parquet (id, kept): its kept rows are the curated set
        data/images (id, split, label, image), data/parsed (id, face_found, label_map)
Params  rois.names, rois.side.<roi>, extract_rois.{margin,grow}.<roi>, extract_rois.feather,
        extract_rois.sheet_per_domain, emotions.source (domain A), emotions.target (domain B)
Writes  data/rois/<roi>.parquet   one row per kept id of filter_emotion (kept + rejected = that set):
            id, roi, split, domain, label, kept, reason,
            bbox [x, y, w, h] (square, source pixels; may leave the image), scale (crop px per source px),
            padded (the box left the image, so the crop was reflected there), region_px,
            crop (PNG, size x size RGB), alpha (PNG, size x size uint8 0-255)
          a rejected row keeps id, roi, split, domain, label and its reason; its payload columns are null
        metrics/extract_rois.json  per ROI: kept/rejected, counts[A|B][split], padded, by_reason, mean_box_side
        plots/extract_rois/<roi>.png  original with the box | crop | alpha, for the lowest ids of each domain
Geometry (boxes, crops, alphas, and the paste that inverts them) lives in stages/lib/rois.py; the manifest's schema
and rows in stages/lib/roi_manifest.py.
"""

import os

from tqdm import tqdm

from .lib import params as P
from .lib import paths
from .lib.codec import to_rgb
from .lib.contact_sheet import LowestIds, boxed_thumbnail, contact_sheet
from .lib.errors import StageError, run_stage
from .lib.roi_manifest import SCHEMA, Reject, Tally, face_inputs, kept_row, rejected_row, roi_payload
from .lib.rois import ROI_NAMES
from .lib.tables import FolderWriter, iter_faces, kept_ids, write_json_atomic

SHEET_THUMB = 128


def read_params(params) -> dict:
    names = P.get(params, "rois.names")
    if (
        not isinstance(names, list)
        or not names
        or len(set(names)) != len(names)
        or not all(n in ROI_NAMES for n in names)
    ):
        raise StageError(
            f"params: rois.names={names!r} must be a non-empty list of distinct ROIs from {', '.join(ROI_NAMES)}"
        )
    source, target = P.emotions(params)
    cfg = {
        "names": names,
        "size": {r: P.roi_side(params, r, lo=8, hi=1024)[0] for r in names},
        "margin": {r: P.number(params, f"extract_rois.margin.{r}", float, lo=0, hi=5) for r in names},
        "grow": {r: P.number(params, f"extract_rois.grow.{r}", float, lo=0, hi=2) for r in names},
        "feather": P.number(params, "extract_rois.feather", float, lo=0, hi=1),
        "sheet_per_domain": P.number(params, "extract_rois.sheet_per_domain", int, lo=0, hi=64, default=4),
        "domains": {source: "A", target: "B"},
    }
    P.check_unknown(params, ["extract_rois", "rois", "emotions"], roi_names=names)
    return cfg


def sheet_tiles(image, box, crop, alpha, domain):
    """original (with the box drawn) | crop | alpha, each as an RGB thumbnail."""
    colour = (255, 60, 0) if domain == "A" else (0, 160, 255)
    return [boxed_thumbnail(image, box, SHEET_THUMB, colour), crop, to_rgb(alpha)]


def face_rows(row, cfg, sheets) -> dict:
    """{roi: the output row} of one image row, offering its kept crops to the sheets."""
    names, domains = cfg["names"], cfg["domains"]
    try:
        image, labels, domain = face_inputs(row, domains)
    except Reject as rej:
        return {r: rejected_row(row["id"], r, row, domains, rej.reason) for r in names}
    out = {}
    for r in names:
        try:
            got = roi_payload(image, labels, r, cfg["size"][r], cfg["margin"][r], cfg["feather"], cfg["grow"][r])
        except Reject as rej:
            out[r] = rejected_row(row["id"], r, row, domains, rej.reason)
            continue
        sheets[r].offer(domain, row["id"], lambda g=got: sheet_tiles(image, g["bbox"], g["crop"], g["alpha"], domain))
        out[r] = kept_row(row, r, domain, got)
    return out


def extract(cfg, ids, batches):
    """Stream the images, writing every ROI row; returns the tally and the sheets."""
    names = cfg["names"]
    tally, sheets, seen = Tally(names), {r: LowestIds(cfg["sheet_per_domain"]) for r in names}, set()
    with (
        FolderWriter(paths.ROIS, names, SCHEMA) as manifests,
        tqdm(total=len(ids), desc="extract_rois", unit="face") as bar,
    ):

        def emit(roi, rows):
            manifests.write(roi, rows)
            for got in rows:
                tally.add(roi, got)

        for rows in batches:
            out = {r: [] for r in names}
            for row in rows:
                if row["id"] in seen:
                    raise StageError(f"{paths.IMAGES} has id {row['id']} twice; rerun ingest")
                seen.add(row["id"])
                for r, got in face_rows(row, cfg, sheets).items():
                    out[r].append(got)
                bar.update()
            for r in names:
                emit(r, out[r])
        # kept ids that the images table does not have: still one reject row each, in id order
        lost = [i for i in ids if i not in seen]
        for r in names:
            emit(r, [rejected_row(i, r, None, cfg["domains"], "missing_image") for i in lost])
    return tally, sheets


def write_sheets(sheets, cfg, plots=paths.plots_dir("extract_rois")):
    os.makedirs(plots, exist_ok=True)
    for name in os.listdir(plots):
        if name.endswith(".png") and name[:-4] not in sheets:
            os.unlink(os.path.join(plots, name))  # an ROI dropped from rois.names leaves no stale figure
    for roi, sheet in sheets.items():
        images, captions = [], []
        for domain in ("A", "B"):
            for image_id, tiles in sheet.get(domain):
                images += tiles
                captions += [f"{domain} {image_id[:10]}", f"{roi} {cfg['size'][roi]}px", "alpha"]
        contact_sheet(images, captions, os.path.join(plots, f"{roi}.png"), cols=3, thumb=SHEET_THUMB)


def main():
    cfg = read_params(P.load())
    ids = kept_ids(paths.FILTER_EMOTION, "filter_emotion")
    batches = iter_faces(ids, ["split", "label", "image"], ["face_found", "label_map"], optional=["kept"])
    tally, sheets = extract(cfg, ids, batches)
    metrics = tally.metrics(cfg["size"], len(ids))
    write_json_atomic(metrics, paths.metrics_file("extract_rois"))
    write_sheets(sheets, cfg)
    summary = ", ".join(
        f"{r} {m['kept']}/{len(ids)} (A {sum(m['counts']['A'].values())}, "
        f"B {sum(m['counts']['B'].values())}, padded {m['padded']})"
        for r, m in metrics["rois"].items()
    )
    print(f"extract_rois: kept {summary}")


if __name__ == "__main__":
    run_stage(main)
