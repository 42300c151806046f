"""Tiny synthetic ROI manifests in the `data/rois/<roi>.parquet` schema, for training tests.

Domain A draws a flat dark mouth line, domain B a bright open curved smile, both on a skin-toned square with a
little random placement, so a translator has something real to learn. Test-split and rejected rows are included
too: training must ignore them.
"""

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from stages.lib.codec import content_id, encode_png
from stages.lib.tables import write_table_atomic

# The mouth manifests' side, and train params small enough for a test to run a few epochs in seconds.
SIZE = 16
TINY = dict(
    epochs={"mouth": 3},
    epochs_decay={"mouth": 1},
    batch={"mouth": 4},
    ngf=2,
    ndf=2,
    pool_size=4,
    device="cpu",
    seed=0,
    n_blocks={"mouth": 1},
    n_layers={"mouth": 1},
    n_down={"mouth": 2},
    generator="residual",
    lambda_identity={"mouth": 0.5},
    lambda_expression={"mouth": 0.0},
)


def draw_mouth(size, smile: bool, rng: np.random.Generator) -> np.ndarray:
    skin = tuple(int(v) for v in rng.integers([190, 140, 110], [235, 185, 150]))
    img = Image.new("RGB", (size, size), skin)
    d = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.uniform(-size / 16, size / 16), size / 2 + rng.uniform(-size / 16, size / 16)
    half = size * rng.uniform(0.25, 0.32)
    width = max(1, size // 16)
    if smile:
        box = [cx - half, cy - half * 0.9, cx + half, cy + half * 0.6]
        d.chord(box, 0, 180, fill=(120, 20, 30))
        d.rectangle([cx - half * 0.7, cy - half * 0.15, cx + half * 0.7, cy + half * 0.1], fill=(245, 245, 240))
    else:
        d.line([cx - half, cy, cx + half, cy], fill=(90, 40, 40), width=width)
    return np.asarray(img)


def write_manifest(path, roi="mouth", size=32, n_train=16, n_test=2, n_rejected=2, seed=0, domains=("A", "B")):
    """Write a manifest with n_train kept train rows per domain (plus test and rejected rows); returns the path."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("id", "roi", "split", "domain", "bbox", "scale", "crop", "alpha", "kept", "reason")}
    alpha = encode_png(np.full((size, size), 255, np.uint8))
    for domain in domains:
        for i in range(n_train + n_test + n_rejected):
            crop = encode_png(draw_mouth(size, domain == "B", rng))
            kept = i < n_train + n_test
            cols["id"].append(content_id(crop + domain.encode() + bytes([i % 256])))
            cols["roi"].append(roi)
            cols["split"].append("train" if i < n_train or not kept else "test")
            cols["domain"].append(domain)
            cols["bbox"].append([0, 0, size, size] if kept else None)
            cols["scale"].append(1.0 if kept else None)
            cols["crop"].append(crop if kept else None)
            cols["alpha"].append(alpha if kept else None)
            cols["kept"].append(kept)
            cols["reason"].append("" if kept else "roi_small")
    schema = pa.schema([
        ("id", pa.string()), ("roi", pa.string()), ("split", pa.string()), ("domain", pa.string()),
        ("bbox", pa.list_(pa.int32())), ("scale", pa.float32()), ("crop", pa.binary()), ("alpha", pa.binary()),
        ("kept", pa.bool_()), ("reason", pa.string()),
    ])  # fmt: skip
    write_table_atomic(pa.Table.from_pydict(cols, schema=schema), str(path))
    return path
