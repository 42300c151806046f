"""ingest: read a face dataset and write the shared image table `data/images/` (see ../shared/DESIGN.md).

    python -m stages.ingest                       # params.yaml `ingest:` block; demo by default
    dvc exp run -S ingest.source=labelled_folder -S ingest.path=../shared/data/facial_expressions \
        -S ingest.split_by=group                  # splits drawn per identity and near-duplicate group
    dvc exp run -S ingest.source=image_folder -S ingest.path=/data/ffhq   # no labels: the judge's pseudo-labels

Every input row ends as one output row: kept, or rejected with a `reason`
(outside_root, missing_file, corrupt_image, too_large, unknown_label, too_small, duplicate, label_conflict) and a
human `detail`. A split the source does not give is drawn from the row's `group` (stages/lib/ingest_groups.py).
`label_source` is `given`, or `judge` for image_folder: `label` is then the judge's top class on the whole image and
`label_prob` its probability (stages/lib/pseudo_labels.py; `ingest.device` runs the judge).
The demo source also writes its ground truth to `data/demo_truth.parquet`, for tests only.
"""

import os
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import pyarrow as pa
from tqdm import tqdm

from .lib import params as P
from .lib import paths, sources, tables
from .lib.errors import StageError, run_stage
from .lib.image_table import (
    CONTENT_FREE,
    SCHEMA,
    TRUTH_SCHEMA,
    apply_settled,
    count_keys,
    ingest_metrics,
    record_worker,
    settle_copies,
    truth_row,
)
from .lib.ingest_groups import Signatures, apply_groups
from .lib.pseudo_labels import PseudoLabeller
from .lib.tables import ShardWriter, write_json_atomic, write_table_atomic

CHUNK = 256


def read_params(p):
    cfg = {
        "source": P.choice(p, "ingest.source", sources.SOURCES),
        "path": P.get(p, "ingest.path", "") or "",
        "min_size": P.number(p, "ingest.min_size", int, lo=1),
        "test_fraction": P.number(p, "ingest.test_fraction", float, lo=0.0, hi=1.0),
        "shard_bytes": P.number(p, "ingest.shard_mb", int, lo=1) * 2**20,
        "max_file_bytes": P.number(p, "ingest.max_file_mb", float, above=0, default=64) * 2**20,
        # PIL refuses above 2x its own 89 MP bomb limit whatever we allow
        "max_pixels": P.number(p, "ingest.max_pixels", int, lo=1, hi=178_000_000, default=120_000_000),
        "duplicate_labels": P.choice(p, "ingest.duplicate_labels", ["reject", "first"], default="reject"),
        "split_by": P.choice(p, "ingest.split_by", ["id", "group"], default="id"),
        "group_distance": P.number(p, "ingest.group_distance", float, above=0, hi=2, default=0.55),
        "group_pattern": P.regex(p, "ingest.group_pattern", default=""),
    }
    # Each source reads its own keys; all of them are valid whichever source is chosen.
    P.known(*(f"ingest.{key}" for key in ("demo", "csv", "image_column", "label_column", "device")))
    P.check_unknown(p, ["ingest"])
    if cfg["source"] == "demo":
        cfg["demo"] = dict(
            n=P.number(p, "ingest.demo.n", int, lo=1),
            size=P.number(p, "ingest.demo.side", int, lo=32),
            seed=P.number(p, "ingest.demo.seed", int, lo=0),
        )
    if cfg["source"] == "image_folder":
        cfg["device"] = P.device(p, "ingest.device")
    if cfg["source"] == "labelled_folder":
        cfg["labelled"] = dict(
            csv_path=P.get(p, "ingest.csv", "") or "",
            image_column=P.text(p, "ingest.image_column"),
            label_column=P.text(p, "ingest.label_column"),
        )
    return cfg


def decode_all(cfg, records, rows_path, signatures):
    """Pass 1: decode every record once into the scratch table `rows_path`, signing what grouping needs; returns
    which rows share their bytes ({content id: [(position, source_key, label, reason)]}) and the demo's ground
    truth by position."""
    copies, truths = defaultdict(list), {}
    total = cfg["demo"]["n"] if cfg["source"] == "demo" else None
    labeller = PseudoLabeller(cfg["source"] == "image_folder", cfg.get("device"))
    work = record_worker(cfg, labeller.face_square)
    position = 0
    with (
        ShardWriter(rows_path, SCHEMA, cfg["shard_bytes"]) as rows_out,
        ThreadPoolExecutor(P.usable_cores()) as pool,
        tqdm(total=total, desc="ingest", unit="img") as bar,
    ):
        while chunk := list(islice(records, CHUNK)):
            rows = list(pool.map(work, chunk))
            labeller.label(rows)  # before the copies are noted: copies of one image get one label
            for row, record in zip(rows, chunk):
                if row["reason"] not in CONTENT_FREE:
                    label = row["label"] if row["reason"] != "unknown_label" else None
                    copies[row["id"]].append((position, row["source_key"], label, row["reason"]))
                if record.truth:
                    truths[position] = record.truth
                position += 1
            signatures.add(rows, chunk)
            rows_out.write({name: [row[name] for row in rows] for name in SCHEMA.names})
            bar.update(len(rows))
    return copies, truths


def write_settled(cfg, rows_path, settled, groups, truths):
    """Pass 2: stream the scratch table into data/images with the copies settled and the splits drawn; returns
    (row counts by kept, reason, label and split; the demo's truth rows; the number of rows)."""
    counts, truth, start = Counter(), [], 0
    with ShardWriter(paths.IMAGES, SCHEMA, cfg["shard_bytes"]) as out:
        for batch in tables.iter_batches(rows_path):
            columns = apply_groups(apply_settled(batch.to_pydict(), start, settled), groups, cfg)
            out.write(columns)
            for i in range(len(columns["id"])):
                row = {name: columns[name][i] for name in ("id", "source_key", "kept", "reason", "label", "split")}
                counts[count_keys(row)] += 1
                if start + i in truths:
                    truth.append(truth_row(row, truths[start + i]))
            start += len(columns["id"])
    return counts, truth, out.rows


def main():
    cfg = read_params(P.load())
    # A label conflict, and a group, can only be seen once every copy has been read: two passes over a scratch table.
    tables.clear_leftovers(paths.IMAGES, kinds=("scratch",))
    parent = os.path.dirname(os.path.abspath(paths.IMAGES))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=tables.temp_prefix(paths.IMAGES, "scratch")) as scratch:
        rows_path = os.path.join(scratch, "rows")
        with Signatures(cfg["split_by"] == "group", P.usable_cores()) as signatures:
            copies, truths = decode_all(cfg, sources.open_source(cfg), rows_path, signatures)
        settled = settle_copies(copies, cfg["duplicate_labels"])
        groups = signatures.groups(copies, settled, cfg["group_distance"], cfg["group_pattern"])
        counts, truth, n_rows = write_settled(cfg, rows_path, settled, groups, truths)
    write_table_atomic(pa.Table.from_pylist(truth, schema=TRUTH_SCHEMA), paths.DEMO_TRUTH)
    write_json_atomic(ingest_metrics(counts, signatures.metrics(groups)), paths.metrics_file("ingest"))
    if n_rows == 0:
        raise StageError(f"ingest: source {cfg['source']!r} at {cfg['path']!r} yielded no images")
    kept = sum(n for (kept, *_), n in counts.items() if kept)
    print(f"ingest: {kept}/{n_rows} kept -> {paths.IMAGES}")


if __name__ == "__main__":
    run_stage(main)
