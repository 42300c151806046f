"""The streamed parse loop shared by every backend: images table in, parsed table out.

Rows are read with tables.iter_batches and written with tables.ShardWriter, so memory stays flat whatever the table's
size. Decoding + resizing (prepare) and rasterising + PNG encoding + counting (finish) run in a two-thread pool while
the main thread runs the model on the batch in between, so the model is never left waiting on the CPU work; numpy,
OpenCV, PIL and torch release the GIL for their heavy parts. Results are written in input order, so a rerun writes
byte-identical shards.
"""

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from .. import tables
from ..codec import DecodeError, decode_image, encode_png
from ..contact_sheet import overlay, render_sheet
from ..errors import StageError
from ..labels import N_PARSE_CLASSES
from .labelmap import PALETTE, class_counts

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("backend", pa.string()),
        ("parse_size", pa.int32()),
        ("face_found", pa.bool_()),
        ("face_bbox", pa.list_(pa.int32())),  # x, y, w, h in image pixels; null when no face
        ("label_map", pa.binary()),  # PNG, uint8 canonical ids, at the image's resolution
        ("class_counts", pa.list_(pa.int64())),  # 19 pixel counts at the image's resolution
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("error", pa.string()),  # why a kept image could not be parsed; empty otherwise
    ]
)
INPUT_COLUMNS = ["id", "kept", "image"]


def kept_chunks(images_path, chunk_rows):
    """Lists of (id, png bytes) of the kept rows, `chunk_rows` at a time, streamed shard by shard."""
    chunk = []
    for batch in tables.iter_batches(images_path, columns=INPUT_COLUMNS, batch_rows=max(chunk_rows, 64)):
        cols = batch.to_pydict()
        for row_id, kept, image in zip(cols["id"], cols["kept"], cols["image"]):
            if kept:
                chunk.append((row_id, image))
                if len(chunk) == chunk_rows:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def check_input(images_path):
    files = tables.shard_paths(images_path)
    if not files:
        raise StageError(f"{images_path} has no Parquet shards; run the ingest stage first (dvc repro ingest)")
    names = set(pq.ParquetFile(files[0]).schema_arrow.names)
    missing = [c for c in INPUT_COLUMNS if c not in names]
    if missing:
        raise StageError(f"{files[0]} lacks columns {missing}; it is not an images table (see DESIGN.md)")


def count_kept(images_path):
    return int(
        sum(
            pc.sum(b.column(0)).as_py() or 0
            for b in tables.iter_batches(images_path, columns=["kept"], batch_rows=65536)
        )
    )


class Prepared:
    """One kept row between the steps: its decoded image (dropped after finish), the model input, its size."""

    __slots__ = ("id", "image", "input", "side", "height", "width", "error")

    def __init__(self, row_id):
        self.id, self.image, self.input, self.side, self.height, self.width, self.error = (
            row_id,
            None,
            None,
            0,
            0,
            0,
            "",
        )


def _prepare(parser, chunk):
    out = []
    for row_id, data in chunk:
        p = Prepared(row_id)
        try:
            if data is None:
                raise ValueError("kept row without image bytes")
            p.image = decode_image(data)  # uint8 grey or RGB, JPEG or PNG: the pixels ingest measured
            p.height, p.width = p.image.shape[:2]
            p.input, p.side = parser.prepare(p.image)
        except Exception as err:  # one bad image is one row with an error, not a failed stage
            detail = str(err) if isinstance(err, DecodeError) else f"corrupt_image: {type(err).__name__}: {err}"
            p.error = detail[:200]
            p.image = None
        out.append(p)
    return out


def _finish(parser, prepared, raws, want_tiles):
    rows = {name: [] for name in SCHEMA.names}
    tiles = []
    raw_iter = iter(raws)
    for p in prepared:
        label_map = bbox = None
        if not p.error:
            label_map, bbox = parser.finish(next(raw_iter), p.height, p.width)
        found = label_map is not None
        if p.error:
            png, counts = None, [0] * N_PARSE_CLASSES
        else:
            if not found:
                label_map = np.zeros((p.height, p.width), np.uint8)
            png, counts = encode_png(label_map), class_counts(label_map)
        for name, value in (
            ("id", p.id),
            ("backend", parser.backend),
            ("parse_size", p.side),
            ("face_found", found),
            ("face_bbox", bbox),
            ("label_map", png),
            ("class_counts", counts),
            ("width", p.width),
            ("height", p.height),
            ("error", p.error),
        ):
            rows[name].append(value)
        if len(tiles) < want_tiles and p.image is not None:
            tiles.append(
                (overlay(p.image, label_map, PALETTE, alpha=0.55), f"{p.id[:8]} {'face' if found else 'NO FACE'}")
            )
        p.image = p.input = None
    return rows, tiles


def parse_table(images_path, out_path, parser, batch_rows=16, progress=None, sheet_tiles=24):
    """Parse every kept row of `images_path` into `out_path`; returns (stats, contact sheet image or None)."""
    check_input(images_path)
    total = count_kept(images_path)
    stats = {"images": 0, "faces_found": 0, "errors": 0}
    tiles, model_seconds = [], 0.0
    start = time.perf_counter()
    bar = tqdm(total=total, unit="img", desc=f"parse[{parser.backend}]", file=progress, dynamic_ncols=True)

    def write(future):
        rows, new_tiles = future.result()
        writer.write(rows)
        tiles.extend(new_tiles[: max(0, sheet_tiles - len(tiles))])
        n = len(rows["id"])
        stats["images"] += n
        stats["faces_found"] += sum(rows["face_found"])
        stats["errors"] += sum(1 for e in rows["error"] if e)
        bar.update(n)

    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="parse") as pool,
        tables.ShardWriter(out_path, SCHEMA) as writer,
    ):
        chunks = kept_chunks(images_path, batch_rows)
        first = next(chunks, None)
        next_prep = pool.submit(_prepare, parser, first) if first is not None else None
        finishing, submitted = deque(), 0
        while next_prep is not None:
            prepared = next_prep.result()
            upcoming = next(chunks, None)
            next_prep = pool.submit(_prepare, parser, upcoming) if upcoming is not None else None
            t0 = time.perf_counter()
            raws = parser.infer([p.input for p in prepared if not p.error])
            model_seconds += time.perf_counter() - t0
            # Tiles come from the first rows only; later chunks skip the thumbnail work.
            finishing.append(pool.submit(_finish, parser, prepared, raws, max(0, sheet_tiles - submitted)))
            submitted += len(prepared)
            while len(finishing) > 1:
                write(finishing.popleft())
        while finishing:
            write(finishing.popleft())
    bar.close()
    seconds = time.perf_counter() - start
    n = stats["images"]
    stats.update(
        {
            "backend": parser.backend,
            "no_face": n - stats["faces_found"],
            "detection_rate": round(stats["faces_found"] / n, 4) if n else 0.0,
            "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 3) if seconds > 0 else 0.0,
            "model_seconds": round(model_seconds, 3),
            "share_outside_model": round(1 - model_seconds / seconds, 4) if seconds > 0 else 0.0,
        }
    )
    sheet = render_sheet([t for t, _ in tiles], [c for _, c in tiles], cols=6, thumb=160)
    return stats, sheet
