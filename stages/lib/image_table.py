"""The shared image table, `data/images/` (see ../shared/DESIGN.md): its schema, one row per source record (kept, or
rejected with a reason and a human detail), the copies settled, and its metrics. stages/ingest.py streams a source
through these.
"""

import os
from collections import Counter
from functools import partial

import pyarrow as pa

from . import sources
from .codec import DecodeError, content_id, stored_image
from .labels import canonical_emotion

SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("source_key", pa.string()), ("split", pa.string()),
    ("group", pa.string()),  # what the split was drawn from: the row's own id, or its group's (ingest.split_by)
    ("label", pa.string()),
    ("label_prob", pa.float32()), ("label_source", pa.string()),  # `given`; or `judge`: its top class and probability
    ("width", pa.int32()), ("height", pa.int32()), ("channels", pa.int8()),
    ("image", pa.binary()), ("image_format", pa.string()),  # jpeg or png: codec.stored_image
    ("kept", pa.bool_()), ("reason", pa.string()), ("detail", pa.string()),
])  # fmt: skip
TRUTH_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_key", pa.string()), ("true_emotion", pa.string()), ("label_noise", pa.bool_()),
    ("defect", pa.string()), ("face_bbox", pa.list_(pa.int32())),
])  # fmt: skip


def split_from_id(image_id, test_fraction):
    """Deterministic split from the id, so re-ingesting never moves an image between train and test
    (`ingest.split_by: id`; a copy `<id>-dupN` draws what `<id>` draws)."""
    return "test" if int(image_id[:8], 16) / 16**8 < test_fraction else "train"


def ingest_record(record, source, min_size, max_file_bytes=64 * 2**20, max_pixels=120_000_000, face_square=None):
    """One source record -> one row. Runs in a worker thread (decode and PNG encode release the GIL). A kept row
    stores the file's own bytes where they decode plainly to its pixels, else their PNG (codec.stored_image). Its
    `split` is the source's, or None until pass 2 draws it (stages/lib/ingest_groups.py). A kept row to pseudo-label
    also carries `face_square(pixels)` as `face`, for the judge (stages/lib/pseudo_labels.py)."""
    label = canonical_emotion(record.raw_label)
    row = dict(source=source, source_key=record.source_key, split=record.split, label=label, kept=False)
    row.update(label_prob=None, label_source="judge" if record.pseudo_label else "given")
    row.update(dict.fromkeys(("group", "width", "height", "channels", "image", "image_format")), reason="", detail="")

    def unread(kind, reason, detail):
        # never opened (or not readable): the id hashes the name, not the bytes of a file outside the dataset
        return _reject(row, content_id(f"{kind}:".encode() + record.source_key.encode()), reason, detail)

    if record.outside_root:
        return unread("outside_root", "outside_root", f"{record.source_key!r} resolves outside the dataset root")
    if record.missing:
        return unread("missing", "missing_file", f"{record.source_key!r} not found in the dataset")
    try:
        file_bytes = os.path.getsize(record.path) if record.data is None else 0
        if file_bytes > max_file_bytes:  # before reading a byte of it
            return unread("too_large", "too_large", f"{file_bytes / 2**20:.0f} MB file over ingest.max_file_mb")
        data = sources.read_bytes(record)
    except OSError as err:
        return unread("unreadable", "corrupt_image", err.strerror or type(err).__name__)
    image_id = content_id(data)
    if record.problem:
        return _reject(row, image_id, "corrupt_image", record.problem)
    try:
        pixels, stored, image_format = stored_image(data, max_pixels)
    except DecodeError as err:
        return _reject(row, image_id, err.reason, str(err))
    row.update(height=pixels.shape[0], width=pixels.shape[1], channels=1 if pixels.ndim == 2 else 3)
    if label is None and not record.pseudo_label:
        return _reject(row, image_id, "unknown_label", f"label {record.raw_label!r}")
    if min(pixels.shape[:2]) < min_size:
        return _reject(row, image_id, "too_small", f"{row['width']}x{row['height']} < {min_size}")
    row.update(id=image_id, image=stored, image_format=image_format, kept=True)
    if record.pseudo_label and face_square is not None:
        row["face"] = face_square(pixels)  # here, where the pixels are decoded anyway: a small square, not the image
    return row


def record_worker(cfg, face_square=None):
    """ingest_record with the source and limits of ingest's params (stages.ingest.read_params)."""
    limits = {k: cfg[k] for k in ("min_size", "max_file_bytes", "max_pixels")}
    return partial(ingest_record, source=cfg["source"], face_square=face_square, **limits)


def _reject(row, image_id, reason, detail):
    row.update(id=image_id, reason=reason, detail=str(detail).splitlines()[0][:200] if detail else "")
    return row


CONTENT_FREE = ("outside_root", "missing_file")  # rows never read: their id hashes the name, not bytes


def settle_copies(copies: dict, policy: str) -> dict:
    """Final (id, reason) of every row that shares its bytes with another, by position.

    `copies` maps a content id to its rows in order, as (position, source_key, label or None, reason). The canonical
    row, which keeps the plain id, is the first copy with a known label (the first copy when none has one): a good
    copy after one with an unknown label is kept. Every other copy gets `<id>-dupN` and the reason `duplicate`
    (its own `unknown_label` stays). Copies whose known labels disagree all get `label_conflict`
    (`ingest.duplicate_labels: reject`), or the canonical row's label wins (`first`).
    """
    out = {}
    for shared_id, rows in copies.items():
        if len(rows) < 2:
            continue
        labelled = [r for r in rows if r[2] is not None]
        canonical = labelled[0] if labelled else rows[0]
        conflict = policy == "reject" and len({r[2] for r in labelled}) > 1
        n = 0
        for row in rows:
            position, _, _, reason = row
            if row is canonical:
                new_id = shared_id
            else:
                n += 1
                new_id = f"{shared_id}-dup{n}"
            if conflict and row[2] is not None:
                reason, detail = "label_conflict", f"same bytes labelled {', '.join(sorted({r[2] for r in labelled}))}"
            elif row is not canonical and reason != "unknown_label":
                reason, detail = "duplicate", f"same bytes as {canonical[1]}"
            else:
                detail = None
            out[position] = (new_id, reason, detail)
    return out


def apply_settled(batch: dict, start: int, settled: dict) -> dict:
    """Apply settle_copies' verdicts to one batch of rows (columns as lists), from row `start` on."""
    for i in range(len(batch["id"])):
        verdict = settled.get(start + i)
        if verdict is None:
            continue
        new_id, reason, detail = verdict
        batch["id"][i] = new_id
        if reason != batch["reason"][i]:
            batch["reason"][i], batch["kept"][i], batch["detail"][i] = reason, False, detail
            batch["image"][i] = batch["image_format"][i] = None
    return batch


def truth_row(row, t):
    return dict(
        id=row["id"],
        source_key=row["source_key"],
        true_emotion=t.get("true_emotion"),
        label_noise=bool(t.get("label_noise")),
        defect=t.get("defect"),
        face_bbox=list(t["face_bbox"]) if t.get("face_bbox") is not None else None,
    )


def count_keys(row):
    return (row["kept"], row["reason"], row["label"] or "unknown", row["split"])


def ingest_metrics(counts, grouping=None):
    def tally(pick, only_kept):
        out = Counter()
        for key, n in counts.items():
            if key[0] or not only_kept:
                out[pick(key)] += n
        return dict(sorted(out.items()))

    rows = sum(counts.values())
    kept = sum(n for key, n in counts.items() if key[0])
    rejected = tally(lambda k: k[1], only_kept=False)
    rejected.pop("", None)
    return {
        "rows": rows,
        "kept": kept,
        "rejected": rows - kept,
        "kept_fraction": round(kept / max(rows, 1), 4),
        "kept_by_label": tally(lambda k: k[2], True),
        "kept_by_split": tally(lambda k: k[3], True),
        "rejected_by_reason": rejected,
        **({"grouping": grouping} if grouping is not None else {}),  # ingest.split_by: group only
    }
