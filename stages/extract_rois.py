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
Geometry (boxes, crops, alphas, and the paste that inverts them) lives in stages/lib/rois.py.
"""
import os
import shutil
from collections import Counter

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from .lib import params as P
from .lib.codec import decode_png, encode_png, to_rgb
from .lib.contact_sheet import contact_sheet, load_rows
from .lib.errors import StageError, run_stage
from .lib.labels import EMOTIONS
from .lib.rois import ROI_NAMES, box_leaves_image, crop_roi, region_mask, roi_geometry
from .lib import tables

IMAGES = "data/images"
PARSED = "data/parsed"
FILTER = "data/filtered/filter_emotion.parquet"
OUT = "data/rois"
METRICS = "metrics/extract_rois.json"
PLOTS = "plots/extract_rois"

SCHEMA = pa.schema([
    ("id", pa.string()), ("roi", pa.string()), ("split", pa.string()), ("domain", pa.string()),
    ("label", pa.string()), ("kept", pa.bool_()), ("reason", pa.string()),
    ("bbox", pa.list_(pa.int32())), ("scale", pa.float64()), ("padded", pa.bool_()), ("region_px", pa.int64()),
    ("crop", pa.binary()), ("alpha", pa.binary()),
])
PAYLOAD = ("bbox", "scale", "padded", "region_px", "crop", "alpha")
SHEET_THUMB = 128


def read_params(params) -> dict:
    names = P.get(params, "rois.names")
    if not isinstance(names, list) or not names or len(set(names)) != len(names) \
            or not all(n in ROI_NAMES for n in names):
        raise StageError(f"params: rois.names={names!r} must be a non-empty list of distinct ROIs from "
                         f"{', '.join(ROI_NAMES)}")
    source = P.choice(params, "emotions.source", EMOTIONS)
    target = P.choice(params, "emotions.target", EMOTIONS)
    if source == target:
        raise StageError(f"params: emotions.source and emotions.target are both {source!r}; they must differ")
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


def read_label_maps(kept_ids, path=PARSED) -> dict:
    """{id: {face_found, label_map}} for the kept ids. Label-map PNGs are small (few flat classes), so they are
    held in memory while the images stream past."""
    if not os.path.exists(path):
        raise StageError(f"{path} not found; run the parse stage first (dvc repro parse)")
    try:
        return load_rows(path, kept_ids, ["face_found", "label_map"])
    except (pa.ArrowInvalid, KeyError) as err:
        raise StageError(f"{path} lacks id/face_found/label_map: {str(err).splitlines()[0]}") from None


def image_batches(kept_ids, path=IMAGES):
    """The images table's kept-id rows, streamed batch by batch as lists of dicts."""
    if not os.path.exists(path):
        raise StageError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
    wanted = pa.array(kept_ids, pa.string())
    columns = ["id", "split", "label", "image"]
    try:
        schema = pq.read_schema(tables.shard_paths(path)[0])
    except (IndexError, pa.ArrowInvalid) as err:
        raise StageError(f"{path} has no readable Parquet shards ({err})") from None
    if "kept" in schema.names:
        columns.append("kept")
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise StageError(f"{path} lacks columns {missing}; rerun ingest")
    for batch in tables.iter_batches(path, columns=columns):
        yield batch.filter(pc.is_in(batch.column("id"), value_set=wanted)).to_pylist()


class Reject(Exception):
    """This face gives no row for one or all ROIs; `reason` is the reject reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def face_inputs(row, parsed, domains):
    """(RGB image, label map, domain) for one image row, or Reject for the whole face."""
    domain = domains.get(row["label"])
    if domain is None:
        raise Reject("label_not_in_domains")
    if row.get("kept") is False or row["image"] is None:
        raise Reject("missing_image")
    parse = parsed.get(row["id"])
    if parse is None:
        raise Reject("missing_parse")
    if not parse["face_found"] or parse["label_map"] is None:
        raise Reject("no_face")
    try:
        image = to_rgb(decode_png(row["image"]))
        labels = decode_png(parse["label_map"])
    except Exception:  # PIL raises many types for damaged bytes
        raise Reject("corrupt_image") from None
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise Reject("label_map_shape")
    return image, labels, domain


def extract_one(image, labels, roi, cfg):
    """The payload of one ROI row, or Reject when the region can't be formed."""
    size = cfg["size"][roi]
    geometry = roi_geometry(labels, roi, cfg["margin"][roi], size, cfg["feather"], cfg["grow"][roi])
    if geometry is None:
        raise Reject(f"empty_{roi}_region")
    box, alpha = geometry
    crop = crop_roi(image, box, size)
    return {"bbox": list(box), "scale": round(size / box[2], 6), "padded": box_leaves_image(box, image.shape),
            "region_px": int(region_mask(labels, roi).sum()), "crop": crop, "alpha": alpha}


def blank_row(image_id, roi, row, domains, reason):
    meta = row or {}
    return {"id": image_id, "roi": roi, "split": meta.get("split"), "domain": domains.get(meta.get("label")),
            "label": meta.get("label"), "kept": False, "reason": reason, **{c: None for c in PAYLOAD}}


def sheet_tiles(image, box, crop, alpha, domain):
    """original (with the box drawn) | crop | alpha, each as an RGB thumbnail."""
    scale = SHEET_THUMB / max(image.shape[:2])
    thumb = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    x, y, w, h = (int(round(v * scale)) for v in box)
    colour = (255, 60, 0) if domain == "A" else (0, 160, 255)
    cv2.rectangle(thumb, (x, y), (x + w - 1, y + h - 1), colour, 2)
    return [thumb, crop, to_rgb(alpha)]


class Sheet:
    """Keeps the `per_domain` lowest kept ids of each domain, so the figure is the same on every run."""

    def __init__(self, per_domain):
        self.per_domain, self.picks = per_domain, {"A": [], "B": []}

    def offer(self, image_id, domain, make_tiles):
        picks = self.picks[domain]
        if self.per_domain == 0 or (len(picks) >= self.per_domain and image_id > picks[-1][0]):
            return
        picks.append((image_id, make_tiles()))
        picks.sort(key=lambda p: p[0])
        del picks[self.per_domain:]

    def write(self, path, roi, size):
        images, captions = [], []
        for domain in ("A", "B"):
            for image_id, tiles in self.picks[domain]:
                images += tiles
                captions += [f"{domain} {image_id[:10]}", f"{roi} {size}px", "alpha"]
        contact_sheet(images, captions, path, cols=3, thumb=SHEET_THUMB)


class ManifestWriter:
    """One Parquet file per ROI, built in a scratch folder that replaces data/rois whole when all are written."""

    def __init__(self, names, out=OUT):
        self.out = out
        self.tmp = tables.temp_folder(out)
        self.writers = {r: pq.ParquetWriter(os.path.join(self.tmp, f"{r}.parquet"), SCHEMA, compression="zstd",
                                            write_statistics=False) for r in names}

    def write(self, roi, rows):
        if rows:
            self.writers[roi].write_table(pa.Table.from_pylist(rows, schema=SCHEMA))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for w in self.writers.values():
            w.close()
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        tables.publish_folder(self.tmp, self.out)
        return False


class Tally:
    def __init__(self, names):
        self.rows = {r: [] for r in names}  # (kept, reason, domain, split, padded, side)

    def add(self, roi, row):
        side = row["bbox"][2] if row["kept"] else None
        self.rows[roi].append((row["kept"], row["reason"], row["domain"], row["split"], row["padded"], side))

    def metrics(self, cfg, n_input):
        out = {"input": n_input, "rois": {}}
        for roi, rows in self.rows.items():
            kept = [r for r in rows if r[0]]
            splits = sorted({"train", "test"} | {r[3] for r in kept if r[3]})
            counts = {d: {s: sum(1 for r in kept if r[2] == d and r[3] == s) for s in splits} for d in ("A", "B")}
            sides = [r[5] for r in kept]
            out["rois"][roi] = {
                "size": cfg["size"][roi], "kept": len(kept), "rejected": len(rows) - len(kept), "counts": counts,
                "padded": sum(1 for r in kept if r[4]),
                "mean_box_side": round(float(np.mean(sides)), 2) if sides else 0.0,
                "by_reason": dict(sorted(Counter(r[1] for r in rows if not r[0]).items())),
            }
        return out


def extract(cfg, kept_ids, parsed, batches, total):
    """Stream the images, writing every ROI row; returns the tally and the sheets."""
    names, domains = cfg["names"], cfg["domains"]
    tally = Tally(names)
    sheets = {r: Sheet(cfg["sheet_per_domain"]) for r in names}
    seen = set()
    with ManifestWriter(names) as manifests, tqdm(total=total, desc="extract_rois", unit="face") as bar:
        for rows in batches:
            out = {r: [] for r in names}
            for row in rows:
                if row["id"] in seen:
                    raise StageError(f"{IMAGES} has id {row['id']} twice; rerun ingest")
                seen.add(row["id"])
                try:
                    image, labels, domain = face_inputs(row, parsed, domains)
                except Reject as rej:
                    for r in names:
                        out[r].append(blank_row(row["id"], r, row, domains, rej.reason))
                    bar.update()
                    continue
                for r in names:
                    try:
                        got = extract_one(image, labels, r, cfg)
                    except Reject as rej:
                        out[r].append(blank_row(row["id"], r, row, domains, rej.reason))
                        continue
                    sheets[r].offer(row["id"], domain,
                                    lambda g=got: sheet_tiles(image, g["bbox"], g["crop"], g["alpha"], domain))
                    out[r].append({"id": row["id"], "roi": r, "split": row["split"], "domain": domain,
                                   "label": row["label"], "kept": True, "reason": "",
                                   **got, "crop": encode_png(got["crop"]), "alpha": encode_png(got["alpha"])})
                bar.update()
            for r in names:
                manifests.write(r, out[r])
                for row in out[r]:
                    tally.add(r, row)
        # kept ids that the images table does not have: still one reject row each, in id order
        lost = [i for i in kept_ids if i not in seen]
        for r in names:
            rows = [blank_row(i, r, None, domains, "missing_image") for i in lost]
            manifests.write(r, rows)
            for row in rows:
                tally.add(r, row)
    return tally, sheets


def write_sheets(sheets, cfg, plots=PLOTS):
    os.makedirs(plots, exist_ok=True)
    for name in os.listdir(plots):
        if name.endswith(".png") and name[:-4] not in sheets:
            os.unlink(os.path.join(plots, name))  # an ROI dropped from rois.names leaves no stale figure
    for roi, sheet in sheets.items():
        sheet.write(os.path.join(plots, f"{roi}.png"), roi, cfg["size"][roi])


def main():
    cfg = read_params(P.load())
    kept_ids = tables.kept_ids(FILTER, "filter_emotion")
    parsed = read_label_maps(kept_ids)
    tally, sheets = extract(cfg, kept_ids, parsed, image_batches(kept_ids), total=len(kept_ids))
    metrics = tally.metrics(cfg, len(kept_ids))
    tables.write_json_atomic(metrics, METRICS)
    write_sheets(sheets, cfg)
    summary = ", ".join(f"{r} {m['kept']}/{len(kept_ids)} (A {sum(m['counts']['A'].values())}, "
                        f"B {sum(m['counts']['B'].values())}, padded {m['padded']})"
                        for r, m in metrics["rois"].items())
    print(f"extract_rois: kept {summary}")


if __name__ == "__main__":
    run_stage(main)
