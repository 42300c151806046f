"""Readers for the supported face datasets. Each yields `SourceRecord`s in a deterministic order.

A reader only finds files and raw labels; decoding, label mapping, de-duplication and rejects
happen in one place, `stages/ingest.py`, so every source is held to the same rules.

    demo             synthetic faces rendered by stages/demo (no files needed)
    fer2013_csv      fer2013.csv: `emotion,pixels,Usage` rows of 48x48 grey
    fer2013_folders  <path>/{train,test}/<emotion>/*.png
    labelled_folder  an image folder plus a CSV naming the image and label columns
    image_folder     every image under a folder, no labels: the judge's pseudo-labels (stages/lib/pseudo_labels.py)
    celeba           <path>/img_align_celeba/*.jpg + list_attr_celeba.txt (+ list_eval_partition.txt)
"""

import csv
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from .codec import encode_png
from .errors import StageError
from .params import usable_cores

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FER_SPLITS = {"training": "train", "publictest": "val", "privatetest": "test"}
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}


@dataclass
class SourceRecord:
    source_key: str
    raw_label: object
    split: str | None = None  # None: derive from the id
    data: bytes | None = None  # raw file bytes, or PNG bytes for array sources
    path: str | None = None  # read lazily (in a worker) when data is None
    missing: bool = False  # the source names a file that is not there
    outside_root: bool = False  # the named file resolves (symlinks followed) outside the dataset root
    problem: str | None = None  # the reader already knows the row is broken: the reject's detail
    pseudo_label: bool = False  # no label given: ingest labels the decoded face with the judge
    truth: dict = field(default_factory=dict)  # demo ground truth; never used by the pipeline


def file_record(real_root: str, source_key: str, raw_label, file: str, split=None, pseudo=False) -> SourceRecord:
    """A record for a file the dataset names. Paths are resolved, symlinks included, and one that lands outside the
    dataset root (`real_root`, resolved once by the reader) is marked outside_root and never opened
    (`../../etc/passwd`, an absolute path, a symlink out)."""
    real = os.path.realpath(file)
    inside = os.path.commonpath([real_root, real]) == real_root
    missing = inside and not os.path.isfile(real)
    return SourceRecord(
        source_key, raw_label, split, path=file, outside_root=not inside, missing=missing, pseudo_label=pseudo
    )


def read_bytes(record: SourceRecord) -> bytes:
    if record.data is not None:
        return record.data
    with open(record.path, "rb") as f:
        return f.read()


@contextmanager
def open_text(path):
    """A dataset's CSV or list file; a file that is not UTF-8 text is a one-line error, not a traceback."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            yield f
        except UnicodeDecodeError as err:
            raise StageError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        except csv.Error as err:  # e.g. a field over csv.field_size_limit() (131,072 characters)
            raise StageError(f"{path}: malformed CSV ({err})") from None


def _require(path, what):
    if not path:
        raise StageError(f"params: ingest.path is empty; set it to the {what}")
    if not os.path.exists(path):
        raise StageError(f"params: ingest.path={path!r} does not exist (expected the {what})")


# Demo faces drawn per task by one worker: enough to amortise a task's pickling, few enough to keep every worker
# busy to the end of a 750-face demo.
DEMO_TASK = 16


def demo(n, size, seed, workers=1):
    """The demo's faces in order. Drawing one is pure Python on NumPy arrays (21 ms at 256 px on the 2-core VM) and
    holds the GIL, so with `workers` > 1 they are drawn in spawned processes, at most two tasks per worker ahead of
    the reader; sample i depends only on (i, size, seed), so the records are the same for any count."""
    tasks = [(start, min(n, start + DEMO_TASK), size, seed) for start in range(0, n, DEMO_TASK)]
    if workers <= 1 or len(tasks) <= 1:
        drawn = (_draw_demo(*task) for task in tasks)
    else:
        drawn = _drawn_in_processes(tasks, workers)
    index = 0
    for faces in drawn:
        for label, data, truth in faces:
            yield SourceRecord(f"demo/{index:06d}", label, data=data, truth=truth)
            index += 1


def _draw_demo(start, stop, size, seed):
    """Samples start..stop-1 as (label, PNG bytes, truth)."""
    from ..demo import demo_sample

    samples = (demo_sample(i, size, seed) for i in range(start, stop))
    return [(s.label, encode_png(s.image), s.truth) for s in samples]


def _drawn_in_processes(tasks, workers):
    # spawn: ingest's decoding threads are running, and forking a threaded process can deadlock the child
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        queued = iter(tasks)
        pending = deque(pool.submit(_draw_demo, *task) for task in islice(queued, 2 * workers))
        while pending:
            try:
                faces = pending.popleft().result()
            except BrokenProcessPool:
                raise StageError("ingest: a demo drawing process died (out of memory?)") from None
            pending.extend(pool.submit(_draw_demo, *task) for task in islice(queued, 1))
            yield faces


def fer2013_csv(path):
    _require(path, "fer2013.csv file")
    _check_columns(path, {"emotion", "pixels"}, "a FER2013 CSV")
    return _fer_rows(path)


def _fer_rows(path):
    with open_text(path) as f:
        for row_number, row in enumerate(csv.DictReader(f)):
            usage = (row.get("Usage") or "").strip()
            split = FER_SPLITS.get(usage.lower())
            if usage and split is None:  # an empty Usage gets a split from the id; a wrong one is not guessed at
                raise StageError(
                    f"{path}: row {row_number + 2} has Usage {usage[:40]!r}; expected "
                    f"Training, PublicTest, PrivateTest or empty"
                )
            png, problem = _fer_pixels_png(row["pixels"])
            yield SourceRecord(f"row/{row_number}", row["emotion"], split, data=png, problem=problem)


def _check_columns(csv_path, wanted, what):
    with open_text(csv_path) as f:
        columns = next(csv.reader(f), [])
    missing = set(wanted) - set(columns)
    if missing:
        raise StageError(f"{csv_path}: not {what}, missing columns {sorted(missing)} (has {', '.join(columns)})")


def _fer_pixels_png(pixels) -> tuple:
    """(48x48 grey PNG, None) from FER's space-separated string, or (its raw text, what is wrong with it).

    A malformed row keeps its raw text as its bytes, so its id hashes that text and two different broken rows are
    not mistaken for duplicates; ingest rejects it as corrupt_image with the problem as the detail.
    """
    if not isinstance(pixels, str):
        return b"", "no pixels column"
    try:
        values = np.array(pixels.split(), dtype=np.int64)
    except ValueError:
        bad = next(v for v in pixels.split() if not v.lstrip("-").isdigit())
        return pixels.encode(), f"pixel value {bad[:20]!r} is not an integer"
    if values.size != 48 * 48:
        return pixels.encode(), f"{values.size} pixels, expected {48 * 48}"
    if values.min(initial=0) < 0 or values.max(initial=0) > 255:
        return pixels.encode(), f"pixel values {values.min()}..{values.max()} outside 0..255"
    return encode_png(values.astype(np.uint8).reshape(48, 48)), None


def fer2013_folders(path):
    _require(path, "folder holding train/ and test/")
    splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(path, s))]
    if not splits:
        raise StageError(f"{path}: expected train/<emotion>/ and test/<emotion>/ folders")
    return _folder_rows(path, splits)


def _folder_rows(path, splits):
    root = os.path.realpath(path)
    for split in splits:
        for emotion in sorted(os.listdir(os.path.join(path, split))):
            folder = os.path.join(path, split, emotion)
            if os.path.isdir(folder):
                for name in _image_files(folder):
                    yield file_record(root, f"{split}/{emotion}/{name}", emotion, os.path.join(folder, name), split)


def labelled_folder(path, csv_path, image_column, label_column):
    _require(path, "image folder")
    csv_path = csv_path or os.path.join(path, "legend.csv")
    if not os.path.isfile(csv_path):
        raise StageError(f"params: ingest.csv={csv_path!r} not found (a CSV naming the image and label columns)")
    with open_text(csv_path) as f:
        columns = next(csv.reader(f), [])
    for key, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in columns:
            raise StageError(
                f"params: ingest.{key}={column!r} is not a column of {csv_path} (columns: {', '.join(columns)})"
            )
    images_dir = os.path.join(path, "images") if os.path.isdir(os.path.join(path, "images")) else path
    return _labelled_rows(os.path.realpath(path), csv_path, images_dir, image_column, label_column)


def _labelled_rows(root, csv_path, images_dir, image_column, label_column):
    with open_text(csv_path) as f:
        for row in csv.DictReader(f):
            name = row[image_column] or ""  # a short row: no file named, so a missing_file reject
            yield file_record(root, name, row[label_column], os.path.join(images_dir, name))


def image_folder(path):
    _require(path, "image folder")
    if not os.path.isdir(path):
        raise StageError(f"params: ingest.path={path!r} is not a folder (image_folder reads every image under one)")
    return _image_folder_rows(path)


def _image_folder_rows(path):
    """Every image file under `path`, walked in sorted order (a folder's own files, then its subfolders). A linked
    folder is not walked (no loops, no leaving the root); a linked file is resolved and may be outside_root."""
    root = os.path.realpath(path)
    for folder, subfolders, _ in os.walk(path):
        subfolders.sort()
        for name in _image_files(folder):
            file = os.path.join(folder, name)
            if os.path.isdir(file):  # a folder named like an image
                continue
            key = os.path.relpath(file, path).replace(os.sep, "/")
            yield file_record(root, key, None, file, pseudo=True)


def celeba(path):
    _require(path, "CelebA root holding img_align_celeba/ and list_attr_celeba.txt")
    attrs = os.path.join(path, "list_attr_celeba.txt")
    if not os.path.isfile(attrs):
        raise StageError(f"{attrs} not found: CelebA needs its attribute file")
    with open_text(attrs) as f:
        f.readline()  # image count
        names = f.readline().split()
    if "Smiling" not in names:
        raise StageError(f"{attrs}: no Smiling attribute in its header")
    partition = _celeba_partition(os.path.join(path, "list_eval_partition.txt"))
    return _celeba_rows(path, attrs, names.index("Smiling") + 1, partition)


def _celeba_rows(path, attrs, smiling, partition):
    root = os.path.realpath(path)
    with open_text(attrs) as f:
        f.readline(), f.readline()
        for line in f:
            parts = line.split()
            if not parts:
                continue
            file = os.path.join(path, "img_align_celeba", parts[0])
            # CelebA has no neutral label: not smiling is only a neutral *candidate*, which the filters then check.
            flag = parts[smiling] if len(parts) > smiling else None  # a short line: unknown_label
            label = {"1": "happy", "-1": "neutral"}.get(flag)
            yield file_record(root, parts[0], label, file, partition.get(parts[0]))


def _celeba_partition(file):
    if not os.path.isfile(file):
        return {}
    with open_text(file) as f:
        return {name: CELEBA_SPLITS.get(code) for name, code in (line.split() for line in f if line.strip())}


def _image_files(folder):
    return [n for n in sorted(os.listdir(folder)) if n.lower().endswith(IMAGE_EXTS)]


SOURCES = ("demo", "fer2013_csv", "fer2013_folders", "labelled_folder", "image_folder", "celeba")


def open_source(cfg):
    """The records of the source ingest's params name (cfg: stages.ingest.read_params)."""
    name, path = cfg["source"], cfg["path"]
    if name == "demo":
        return demo(**cfg["demo"], workers=usable_cores())
    if name == "labelled_folder":
        return labelled_folder(path, **cfg["labelled"])
    readers = {
        "fer2013_csv": fer2013_csv,
        "fer2013_folders": fer2013_folders,
        "image_folder": image_folder,
        "celeba": celeba,
    }
    return readers[name](path)
