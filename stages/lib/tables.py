"""Parquet tables: atomic writes, size-bounded shards, streamed reads.

A stage output is either one file (`data/filtered/filter_masks.parquet`) or a folder of shards
(`data/images/part-00000.parquet`, ...). Both are written to a temporary sibling and renamed into
place, so a killed stage never leaves a half-written output for DVC to cache.
"""

import contextlib
import glob
import io
import json
import os
import shutil
import tempfile
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import paths
from .errors import StageError

SHARD_BYTES = 256 * 2**20
# Row groups stay small so that readers can stream images without holding a whole shard.
ROW_GROUP_ROWS = 256
# Byte columns that hold PNG or JPEG (images.image, parsed.label_map, roi crop and alpha) are compressed already, so
# Parquet stores them as they are (DESIGN.md). zstd over them saved 0.3% of facial_expressions' JPEGs and nothing on
# the demo's PNGs; only the demo's parsed table (label maps at PNG level 1) grew without it, 0.45 -> 0.52 MB.
ENCODED_COLUMNS = frozenset({"image", "label_map", "crop", "alpha"})
# Reads go through a buffered stream of READ_BUFFER bytes, READ_ROWS rows at a time, rather than a whole column chunk
# at once: a row group of 256 demo PNGs is 27 MB, and pyarrow held up to 150 MB while turning it into one batch (the
# column chunk, the batch, the builders' growth), 68 MB this way. The per-id readers (iter_faces, load_faces) read
# READ_ROWS rows at a time whatever batches they hand on.
READ_BUFFER = 1 << 18
READ_ROWS = 64


def shard_paths(path):
    """The Parquet files of a table: the file itself, or the sorted shards of a folder."""
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "*.parquet")))
    return [path] if os.path.exists(path) else []


def read_table(path, columns=None) -> pa.Table:
    files = shard_paths(path)
    if not files:
        raise FileNotFoundError(path)
    # pre_buffer=False, as in iter_batches: reading three small columns of a 20k-photo parsed table (41 MB, 3 MB
    # read) grew RSS by 88 MB with pyarrow's read-ahead and 43 MB without (2026-12-01)
    return pa.concat_tables([pq.ParquetFile(f, pre_buffer=False).read(columns=columns) for f in files])


def read_upstream(path, columns, stage) -> pa.Table:
    """An upstream stage's table, keyed by unique `id`; missing or malformed is one line naming the stage to run."""
    try:
        table = read_table(path, columns=columns)
    except FileNotFoundError:
        raise StageError(f"{path} not found; run the {stage} stage first (dvc repro {stage})") from None
    except (pa.ArrowInvalid, KeyError) as err:
        raise StageError(f"{path} lacks {'/'.join(columns)}: {str(err).splitlines()[0]}") from None
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise StageError(f"{path} has duplicate ids; rerun {stage}")
    return table


def kept_ids(path, stage) -> list:
    """The sorted ids that an upstream filter kept: the next stage's input rows."""
    table = read_upstream(path, ["id", "kept"], stage)
    return sorted(i for i, k in zip(table.column("id").to_pylist(), table.column("kept").to_pylist()) if k)


def read_frame(path, columns=None):
    return read_table(path, columns).to_pandas()


def iter_batches(path, columns=None, batch_rows=ROW_GROUP_ROWS):
    """Stream a table as pyarrow RecordBatches, shard by shard, without loading it whole."""
    for f in shard_paths(path):
        # pyarrow's default pre_buffer reads a whole shard's column chunks ahead: streaming a 340 MB images table of
        # 20k photos peaked at 417 MB RSS with it and 170 MB without (pyarrow 26, 2026-12-01). READ_BUFFER: see there.
        file = pq.ParquetFile(f, pre_buffer=False, buffer_size=READ_BUFFER)
        yield from file.iter_batches(batch_size=batch_rows, columns=columns)


def kept_summary(table: pa.Table) -> tuple:
    """({input, kept, rejected, kept_fraction}, the reasons of the rejected rows) of a filter's table."""
    kept = table.column("kept").to_pylist()
    reasons = [r for r, k in zip(table.column("reason").to_pylist(), kept) if not k]
    n = len(kept)
    counts = {"input": n, "kept": sum(kept), "rejected": n - sum(kept)}
    return {**counts, "kept_fraction": round(sum(kept) / n, 4) if n else 0.0}, reasons


def _id_batches(path, ids, columns):
    """The rows of table `path` whose id is in `ids`, batch by batch as lists of dicts (a missing table gives none)."""
    wanted = pa.array(sorted(set(ids)), pa.string())
    if len(wanted) == 0:
        return
    for batch in iter_batches(path, columns=columns, batch_rows=READ_ROWS):
        yield batch.filter(pc.is_in(batch.column("id"), value_set=wanted)).to_pylist()


def _upstream_shards(path, stage) -> list:
    files = shard_paths(path)
    if not files:
        raise StageError(f"{path} not found; run the {stage} stage first (dvc repro {stage})")
    return files


def load_rows(path, ids, columns) -> dict:
    """{id: {column: value}} for the rows of table `path` whose id is in `ids`, streamed batch by batch."""
    columns = ["id"] + [c for c in columns if c != "id"]
    return {row["id"]: row for rows in _id_batches(path, ids, columns) for row in rows}


def iter_rows_of(path, ids, columns, stage, optional=()) -> Iterator[list]:
    """The rows of upstream table `path` whose id is in `ids`, streamed batch by batch as lists of dicts; `optional`
    columns are read where the table has them. A missing table or column is one line naming the stage to rerun."""
    try:
        names = pq.read_schema(_upstream_shards(path, stage)[0]).names
    except pa.ArrowInvalid as err:
        raise StageError(f"{path} has no readable Parquet shards ({err})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise StageError(f"{path} lacks columns {missing}; rerun {stage}")
    yield from _id_batches(path, ids, list(columns) + [c for c in optional if c in names])


def load_faces(ids, image_columns=(), parse_columns=()) -> dict:
    """The images table joined with the parse table on id, for `ids`: {id: {column: value}}. An id that one table
    lacks has only the other's columns (callers decide whether that is an error); one neither has is absent."""
    out = {}
    for path, columns in ((paths.IMAGES, image_columns), (paths.PARSED, parse_columns)):
        if columns:
            for image_id, row in load_rows(path, ids, columns).items():
                out.setdefault(image_id, {}).update(row)
    return out


def _joined(images, parsed):
    """Merge-join two streams of row batches on id. parse writes its rows in the images table's order, so each
    parsed row turns up in step with its image and one batch of each stream is held at a time; a parsed row left
    over means the tables are out of step (or parse has an id the images table lacks)."""
    parsed_rows = (row for rows in parsed for row in rows)
    head = next(parsed_rows, None)
    for rows in images:
        for row in rows:
            if head is not None and head["id"] == row["id"]:
                row.update(head)
                head = next(parsed_rows, None)
        yield rows
    if head is not None:
        raise StageError(f"{paths.PARSED} is not in the order of {paths.IMAGES} (at id {head['id']}); rerun parse")


def _rebatched(batches, size: int) -> Iterator[list]:
    """The rows of `batches` again, in lists of exactly `size` (the last one shorter)."""
    held = []
    for rows in batches:
        held.extend(rows)
        while len(held) >= size:
            yield held[:size]
            held = held[size:]
    if held:
        yield held


def iter_faces(ids, image_columns=(), parse_columns=(), optional=(), batch_rows=ROW_GROUP_ROWS) -> Iterator[list]:
    """load_faces streamed: lists of `batch_rows` joined row dicts for `ids` (the last list shorter), in the images
    table's order, about one row group of each table in memory at a time. As in load_faces, an id without a parse
    row has only the image columns; `optional` image columns are read where the table has them. A missing table or
    column is one line naming the stage. Equal batches matter to torch: every new batch shape costs memory that the
    CPU kernels keep (a judge pass over row groups of 230-256 faces grew by ~80 MB per new shape)."""
    own = lambda columns: ["id"] + [c for c in columns if c != "id"]  # noqa: E731
    images = iter_rows_of(paths.IMAGES, ids, own(image_columns), "ingest", optional)
    if parse_columns:
        images = _joined(images, iter_rows_of(paths.PARSED, ids, own(parse_columns), "parse"))
    yield from _rebatched(images, batch_rows)


def compression(schema: pa.Schema) -> dict:
    """Parquet's codec for each leaf column of `schema`: none for ENCODED_COLUMNS, zstd for the rest. pyarrow keys
    per-column codecs by leaf path (`face_bbox.list.element`) and leaves unnamed leaves uncompressed, so the paths
    are read from the Parquet schema that pyarrow derives."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    codecs = {}
    for i in range(len(parquet_schema)):
        path = parquet_schema.column(i).path
        field = schema.field(path.split(".")[0])
        codecs[path] = "none" if field.name in ENCODED_COLUMNS and pa.types.is_binary(field.type) else "zstd"
    return codecs


def parquet_writer(path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, compression=compression(schema), write_statistics=False)


def _write(table, path):
    with parquet_writer(path, table.schema) as writer:
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Outputs get the user's umask, as a plain open() would give them (mkstemp's 0600 and mkdtemp's 0700 would not):
# face photos stay as private as the user's files are.
def file_mode() -> int:
    return 0o666 & ~_umask()


def folder_mode() -> int:
    return 0o777 & ~_umask()


def temp_prefix(path, kind="tmp") -> str:
    return f".{kind}-{os.path.basename(os.path.normpath(path))}-"


def clear_leftovers(path, kinds=("tmp", "old")):
    """Remove what a killed run of this output left beside it: its `.tmp-<name>-*` and `.old-<name>-*` entries
    (and `.scratch-<name>-*`, ingest's first pass, when asked)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        if entry.startswith(tuple(temp_prefix(path, kind) for kind in kinds)):
            target = os.path.join(folder, entry)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)


def temp_folder(path) -> str:
    """A scratch folder beside output folder `path`, to be published over it by publish_folder; a killed run's
    scratch folders are cleared first."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    clear_leftovers(path)
    return tempfile.mkdtemp(dir=parent, prefix=temp_prefix(path))


@contextlib.contextmanager
def _replacing(path):
    """A temp file beside `path`, with the user's umask like any other output, that replaces `path` when the block
    exits cleanly and is removed when it fails: the file appears whole or not at all."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    clear_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path))
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_table_atomic(table: pa.Table, path):
    """Write one Parquet file so that it appears whole or not at all."""
    with _replacing(path) as tmp:
        _write(table, tmp)


class ShardWriter:
    """Write rows batch by batch into `part-NNNNN.parquet` shards of at most `shard_bytes`.

    Rows are gathered into row groups of ROW_GROUP_ROWS whatever the size of each write, so the files depend on the
    rows alone, not on how a caller chunks them: parse, writing 16-row chunks, made a row group of each (130 for
    2,070 photos, now 9, and 4 % fewer bytes). A shard is closed as soon as it holds `shard_bytes`; the next write
    opens the next one.

    Use as a context manager; the folder replaces `path` only when the block exits cleanly.
    """

    def __init__(self, path, schema: pa.Schema, shard_bytes=SHARD_BYTES):
        self.path, self.schema, self.shard_bytes = path, schema, shard_bytes
        self.tmp = temp_folder(path)
        self.writer, self.index, self.size, self.rows = None, 0, 0, 0
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def write(self, rows: dict):
        """Append a dict of equal-length columns (lists or arrays)."""
        batch = pa.RecordBatch.from_pydict(rows, schema=self.schema)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self.size + self.pending_bytes >= self.shard_bytes:
            self._flush(self.pending_rows)
            self._close_shard()
        elif self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(self.pending_rows - self.pending_rows % ROW_GROUP_ROWS)

    def _flush(self, n_rows):
        """Write the first `n_rows` gathered rows (whole row groups but for the last); keep the rest gathered."""
        if not n_rows:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        if self.writer is None:
            self._next_shard()
        self.writer.write_table(table.slice(0, n_rows), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(n_rows)
        self.pending, self.pending_rows = rest.to_batches(), rest.num_rows
        self.size += self.pending_bytes - rest.nbytes
        self.pending_bytes = rest.nbytes

    def _close_shard(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _next_shard(self):
        name = os.path.join(self.tmp, f"part-{self.index:05d}.parquet")
        self.writer = parquet_writer(name, self.schema)
        self.index, self.size = self.index + 1, 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None
        try:
            if not failed:  # the last rows are written here, so a full disk can still fail the block
                self._flush(self.pending_rows)
                if self.index == 0:
                    self._next_shard()  # an empty table is still a table, with its schema
            self._close_shard()
        except BaseException:
            failed = True
            if self.writer is not None:
                with contextlib.suppress(Exception):  # the file goes with the scratch folder; the first error stands
                    self.writer.close()
            raise
        finally:
            finish_folder(self.tmp, self.path, failed=failed)
        return False


class FolderWriter:
    """One Parquet file per name (`<name>.parquet`) in a scratch folder that replaces folder `path` whole when every
    file is written: a killed run leaves the old folder, never a mix."""

    def __init__(self, path, names, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.tmp = temp_folder(path)
        self.writers = {n: parquet_writer(os.path.join(self.tmp, f"{n}.parquet"), schema) for n in names}

    def write(self, name, rows: list):
        """Append rows (dicts) to file `name`."""
        if rows:
            self.writers[name].write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for writer in self.writers.values():
            writer.close()
        finish_folder(self.tmp, self.path, failed=exc_type is not None)
        return False


def finish_folder(tmp, path, failed: bool):
    """Publish the scratch folder `tmp` over `path`, or remove it when the block that wrote it failed, so that a
    failed run leaves the old output."""
    if failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        publish_folder(tmp, path)


def publish_folder(tmp, path):
    """Move the finished folder `tmp` to `path`. The old output is renamed aside first and removed last, so that at
    every instant `path` holds either the old output or the new one."""
    os.chmod(tmp, folder_mode())  # mkdtemp's 0700; the files inside were opened with the umask already
    aside = None
    if os.path.lexists(path):
        aside = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=temp_prefix(path, "old"))
        aside = os.path.join(aside, "out")
        os.replace(path, aside)
    os.replace(tmp, path)
    if aside is not None:
        shutil.rmtree(os.path.dirname(aside), ignore_errors=True)


def write_bytes_atomic(data: bytes, path):
    """Write `data` to `path` so that it appears whole or not at all, with the user's umask like any other output."""
    with _replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json_atomic(obj, path):
    """Metrics and small reports, sorted and stable so `dvc metrics diff` compares like with like."""
    write_bytes_atomic((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), path)


def save_png_atomic(image, path, compress_level=6):
    """A PIL image as a PNG file, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    write_bytes_atomic(buffer.getvalue(), path)


def save_torch_atomic(obj, path):
    """torch.save, atomically and byte-stable: serialised in memory first, because torch names the archive's root
    folder after the file it writes, so saving straight to a random temp name changes the bytes on every run."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(buffer.getvalue(), path)
