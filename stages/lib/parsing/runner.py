"""The streamed parse loop shared by every backend: images table in, parsed table out.

Rows are read with tables.iter_batches and written with tables.ShardWriter, so memory stays flat whatever the table's
size. In the stage's own process (parse_table), decoding + resizing (prepare) and rasterising + PNG encoding +
counting (finish) run in a two-thread pool while the main thread runs the model on the batch in between, so the model
is never left waiting on the CPU work; numpy, OpenCV, PIL and torch release the GIL for their heavy parts. Worker
processes and Ray actors (workers.py, ray_engine.py) run one chunk start to end instead (parse_chunk). Results are
written in input order, in row groups of tables.ROW_GROUP_ROWS whatever the chunking, so every engine
and worker count writes byte-identical shards.

Timing metrics (Output.summary): `seconds` is wall time; `cpu_seconds` is the CPU time of the parse work in every
process (the stage's, and the workers' tasks; worker start-up and model loading are left out); `model_cpu_seconds`
is the part of it spent in the model call, the model's own threads (MediaPipe's graph, torch's intra-op pool)
included; `share_outside_model_cpu` = 1 - model_cpu_seconds / cpu_seconds.
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
from ..codec import DecodeError, decode_image
from ..contact_sheet import overlay, render_sheet
from ..errors import StageError
from ..labels import N_PARSE_CLASSES
from .labelmap import PALETTE, class_counts, encode_label_map

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("backend", pa.string()),
        ("parse_size", pa.int32()),
        ("face_found", pa.bool_()),
        ("face_bbox", pa.list_(pa.int32())),  # x, y, w, h in image pixels; null when no face
        ("label_map", pa.binary()),  # PNG (labelmap.encode_label_map), uint8 canonical ids, at the image's resolution
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
            png, counts = encode_label_map(label_map), class_counts(label_map)
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
            tiles.append(sheet_tile(p.image, label_map, p.id, found))
        p.image = p.input = None
    return rows, tiles


def sheet_tile(image, label_map, row_id, found):
    """(overlay, caption) of one row for the contact sheet."""
    return overlay(image, label_map, PALETTE, alpha=0.55), f"{row_id[:8]} {'face' if found else 'NO FACE'}"


def parse_chunk(parser, chunk, want_tiles):
    """One chunk start to end in this thread: (rows, tiles, model CPU s, CPU s). For worker processes and Ray actors,
    where nothing else of ours runs beside it, so the process CPU time around the model call is the model's."""
    c0 = time.process_time()
    prepared = _prepare(parser, chunk)
    m0 = time.process_time()
    raws = parser.infer([p.input for p in prepared if not p.error])
    model = time.process_time() - m0
    rows, tiles = _finish(parser, prepared, raws, want_tiles)
    return rows, tiles, model, time.process_time() - c0


def _timed(fn, *args):
    """fn(*args) and the CPU time of this thread in it."""
    t0 = time.thread_time()
    return fn(*args), time.thread_time() - t0


class Output:
    """The parsed table as it is written, in input order: its shards, counts, contact-sheet tiles and the one
    progress bar of the run, whichever engine produces the rows."""

    def __init__(self, out_path, total, backend, progress=None, sheet_tiles=24):
        self.writer = tables.ShardWriter(out_path, SCHEMA)
        self.bar = tqdm(total=total, unit="img", desc=f"parse[{backend}]", file=progress, dynamic_ncols=True)
        self.backend, self.sheet_tiles, self.tiles = backend, sheet_tiles, []
        self.stats = {"images": 0, "faces_found": 0, "errors": 0}
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def write(self, rows, tiles=()):
        self.writer.write(rows)
        self.tiles.extend(tiles[: max(0, self.sheet_tiles - len(self.tiles))])
        n = len(rows["id"])
        self.stats["images"] += n
        self.stats["faces_found"] += sum(rows["face_found"])
        self.stats["errors"] += sum(1 for e in rows["error"] if e)
        self.bar.update(n)

    def own_cpu(self):
        """CPU time of this process, every thread, since the run began."""
        return time.process_time() - self.cpu_start

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        return self.writer.__exit__(*exc)

    def summary(self, engine, workers, cpu_seconds, model_cpu_seconds):
        """(stats for metrics/parse.json, contact sheet); the timing fields are those of the module docstring."""
        seconds = time.perf_counter() - self.start
        stats, n = dict(self.stats), self.stats["images"]
        stats.update(
            {
                "backend": self.backend,
                "engine": engine,
                "workers": workers,
                "no_face": n - stats["faces_found"],
                "detection_rate": round(stats["faces_found"] / n, 4) if n else 0.0,
                "seconds": round(seconds, 3),
                "images_per_s": round(n / seconds, 3) if seconds > 0 else 0.0,
                "cpu_seconds": round(cpu_seconds, 3),
                "model_cpu_seconds": round(model_cpu_seconds, 3),
                "share_outside_model_cpu": round(1 - model_cpu_seconds / cpu_seconds, 4) if cpu_seconds > 0 else 0.0,
            }
        )
        sheet = render_sheet([t for t, _ in self.tiles], [c for _, c in self.tiles], cols=6, thumb=160)
        return stats, sheet


def parse_table(images_path, out_path, parser, batch_rows=16, progress=None, sheet_tiles=24):
    """Parse every kept row of `images_path` into `out_path` in this process; returns (stats, contact sheet).

    CPU accounting: the runner's own work outside the model (the pool threads, the main thread outside infer) is
    timed per thread; the rest of the process's CPU time is the model's (its own threads included)."""
    check_input(images_path)
    out = Output(out_path, count_kept(images_path), parser.backend, progress, sheet_tiles)
    outside, main_in_model, main_start = 0.0, 0.0, time.thread_time()

    def write(future):
        nonlocal outside
        (rows, tiles), cpu = future.result()
        outside += cpu
        out.write(rows, tiles)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="parse") as pool, out:
        chunks = kept_chunks(images_path, batch_rows)
        first = next(chunks, None)
        next_prep = pool.submit(_timed, _prepare, parser, first) if first is not None else None
        finishing, submitted = deque(), 0
        while next_prep is not None:
            prepared, cpu = next_prep.result()
            outside += cpu
            upcoming = next(chunks, None)
            next_prep = pool.submit(_timed, _prepare, parser, upcoming) if upcoming is not None else None
            raws, cpu = _timed(parser.infer, [p.input for p in prepared if not p.error])
            main_in_model += cpu
            # Tiles come from the first rows only; later chunks skip the thumbnail work.
            want = max(0, sheet_tiles - submitted)
            finishing.append(pool.submit(_timed, _finish, parser, prepared, raws, want))
            submitted += len(prepared)
            while len(finishing) > 1:
                write(finishing.popleft())
        while finishing:
            write(finishing.popleft())
    outside += time.thread_time() - main_start - main_in_model
    total = out.own_cpu()
    return out.summary("local", 1, total, max(0.0, total - outside))
