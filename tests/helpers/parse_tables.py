"""Small images tables (the ingest contract) built from files or arrays, for the parse tests and bench/parse.py, and
the parse stage run in the test's own process on them."""

import json

import pyarrow as pa

from stages.lib import tables
from stages.lib.codec import content_id, decode_image, encode_png, stored_image

IMAGES_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("source_key", pa.string()), ("split", pa.string()),
    ("label", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("channels", pa.int32()),
    ("image", pa.binary()), ("image_format", pa.string()), ("kept", pa.bool_()), ("reason", pa.string()),
])  # fmt: skip


def _row(key, image=None, raw=None, reason="", stored=None):
    raw = raw if raw is not None else (stored[0] if stored else encode_png(image))
    kept = image is not None and not reason
    h, w = image.shape[:2] if image is not None else (0, 0)
    data, image_format = stored if stored else ((encode_png(image), "png") if kept else (None, None))
    return {
        "id": content_id(raw),
        "source": "test",
        "source_key": key,
        "split": "train",
        "label": "neutral",
        "width": w,
        "height": h,
        "channels": (image.ndim if image is not None and image.ndim == 2 else 3),
        "image": data,
        "image_format": image_format,
        "kept": kept,
        "reason": reason,
    }


def write_images_table(out_dir, items, chunk=64):
    """items: (key, uint8 array), stored as PNG; (key, uint8 array, (bytes, format)), stored as those bytes; or
    (key, None, reason) for a rejected row. Streams rows into shards."""
    with tables.ShardWriter(str(out_dir), IMAGES_SCHEMA) as writer:
        batch = []
        for item in items:
            key, image = item[0], item[1]
            if image is None:
                batch.append(_row(key, raw=key.encode(), reason=item[2]))
            else:
                batch.append(_row(key, image, stored=item[2] if len(item) > 2 else None))
            if len(batch) == chunk:
                writer.write({k: [r[k] for r in batch] for k in IMAGES_SCHEMA.names})
                batch = []
        if batch:
            writer.write({k: [r[k] for r in batch] for k in IMAGES_SCHEMA.names})


def photo_items(paths, as_ingest=False):
    """(key, decoded array) for image files, decoded lazily so a 2,070-photo table never sits in memory.

    as_ingest: (key, pixels, (bytes, format)) with the bytes ingest stores (codec.stored_image: a plain JPEG's own
    bytes, else PNG), so that a table of the photos is decoded as the stage decodes a real run's."""
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if as_ingest:
            pixels, stored, image_format = stored_image(data)
            yield str(path), pixels, (stored, image_format)
        else:
            yield str(path), decode_image(data)


def stage_args(tmp, out):
    return [
        "--images",
        str(tmp / "data" / "images"),
        "--out",
        str(tmp / "data" / out),
        "--metrics",
        str(tmp / f"{out}.json"),
        "--plot",
        str(tmp / f"{out}.png"),
    ]


def run_in_process(tmp, params, out, monkeypatch):
    """The stage's main in this process (no interpreter start-up); returns its exit status."""
    from stages import parse
    from stages.lib import params as P
    from stages.lib.errors import run_stage

    params_file = tmp / f"params-{out}.yaml"
    params_file.write_text("parse: " + json.dumps(params) + "\n")
    monkeypatch.setattr(P, "PARAMS_FILE", str(params_file))
    try:
        run_stage(parse.main, stage_args(tmp, out), skip_teardown=False)
    except SystemExit as done:
        return done.code
    return 0
