"""The ROI manifest, `data/rois/<roi>.parquet`: extract_rois writes it, train@roi and evaluate@roi read it.

One row per face that filter_emotion kept, for each ROI: kept with its crop and paste-back alpha, or rejected with a
reason (the payload then null). This module holds the schema, the rows (kept, or rejected with their reason), their
per-ROI counts, and the ids of the kept rows by split and domain.
"""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .codec import decode_image, decode_png, encode_png, to_rgb
from .errors import StageError
from .rois import box_leaves_image, crop_roi, region_mask, roi_geometry
from .tables import read_upstream

SCHEMA = pa.schema([
    ("id", pa.string()), ("roi", pa.string()), ("split", pa.string()), ("domain", pa.string()),
    ("label", pa.string()), ("kept", pa.bool_()), ("reason", pa.string()), ("bbox", pa.list_(pa.int32())),
    ("scale", pa.float64()), ("padded", pa.bool_()), ("region_px", pa.int64()), ("crop", pa.binary()),
    ("alpha", pa.binary()),
])  # fmt: skip
PAYLOAD = ("bbox", "scale", "padded", "region_px", "crop", "alpha")


class Reject(Exception):
    """This face gives no row for one or all ROIs; `reason` is the reject reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def face_inputs(row, domains):
    """(RGB image, label map, domain) for one row of the images+parse join (tables.iter_faces), or Reject for the
    whole face."""
    domain = domains.get(row["label"])
    if domain is None:
        raise Reject("label_not_in_domains")
    if row.get("kept") is False or row["image"] is None:
        raise Reject("missing_image")
    if "face_found" not in row:
        raise Reject("missing_parse")
    if not row["face_found"] or row["label_map"] is None:
        raise Reject("no_face")
    try:
        image = to_rgb(decode_image(row["image"]))
        labels = decode_png(row["label_map"])
    except Exception:  # PIL raises many types for damaged bytes
        raise Reject("corrupt_image") from None
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise Reject("label_map_shape")
    return image, labels, domain


def roi_payload(image, labels, roi, size, margin, feather, grow):
    """The payload of one ROI row (crop and alpha as arrays), or Reject when the region can't be formed."""
    geometry = roi_geometry(labels, roi, margin, size, feather, grow)
    if geometry is None:
        raise Reject(f"empty_{roi}_region")
    box, alpha = geometry
    return {
        "bbox": list(box),
        "scale": round(size / box[2], 6),
        "padded": box_leaves_image(box, image.shape),
        "region_px": int(region_mask(labels, roi).sum()),
        "crop": crop_roi(image, box, size),
        "alpha": alpha,
    }


def kept_row(row, roi, domain, payload) -> dict:
    """A kept row: the face's id, split and label, its domain, and the payload with crop and alpha as PNG."""
    meta = {"id": row["id"], "roi": roi, "split": row["split"], "domain": domain, "label": row["label"]}
    return {
        **meta,
        "kept": True,
        "reason": "",
        **payload,
        "crop": encode_png(payload["crop"]),
        "alpha": encode_png(payload["alpha"]),
    }


def rejected_row(image_id, roi, row, domains, reason):
    """A reject row: the face's id, split, domain and label (where known) and the reason; no payload."""
    meta = row or {}
    return {
        "id": image_id,
        "roi": roi,
        "split": meta.get("split"),
        "domain": domains.get(meta.get("label")),
        "label": meta.get("label"),
        "kept": False,
        "reason": reason,
        **{c: None for c in PAYLOAD},
    }


class Tally:
    """Per-ROI counts of the rows written, for metrics/extract_rois.json."""

    def __init__(self, names):
        self.rows = {r: [] for r in names}  # (kept, reason, domain, split, padded, side)

    def add(self, roi, row):
        side = row["bbox"][2] if row["kept"] else None
        self.rows[roi].append((row["kept"], row["reason"], row["domain"], row["split"], row["padded"], side))

    def metrics(self, sizes, n_input):
        out = {"input": n_input, "rois": {}}
        for roi, rows in self.rows.items():
            kept = [r for r in rows if r[0]]
            splits = sorted({"train", "test"} | {r[3] for r in kept if r[3]})
            counts = {d: {s: sum(1 for r in kept if r[2] == d and r[3] == s) for s in splits} for d in ("A", "B")}
            sides = [r[5] for r in kept]
            out["rois"][roi] = {
                "size": sizes[roi],
                "kept": len(kept),
                "rejected": len(rows) - len(kept),
                "counts": counts,
                "padded": sum(1 for r in kept if r[4]),
                "mean_box_side": round(float(np.mean(sides)), 2) if sides else 0.0,
                "by_reason": dict(sorted(Counter(r[1] for r in rows if not r[0]).items())),
            }
        return out


def kept_id_groups(path) -> dict:
    """The ids of the manifest's kept rows by (split, domain), each sorted: {("test", "A"): [id, ...], ...}. Only the
    small columns are read: a reader streams the payload of the rows it needs."""
    table = read_upstream(path, ["id", "split", "domain", "kept"], "extract_rois")
    table = table.filter(pc.fill_null(table.column("kept"), False))
    groups = {}
    for split in ("train", "test"):
        for domain in ("A", "B"):
            part = table.filter(
                pc.and_(pc.equal(table.column("split"), split), pc.equal(table.column("domain"), domain))
            )
            groups[split, domain] = sorted(part.column("id").to_pylist())
    if not groups["test", "A"]:
        raise StageError(
            f"{path} has no kept test rows of domain A (the source emotion): nothing to evaluate; "
            f"check the split and emotions.source"
        )
    return groups
