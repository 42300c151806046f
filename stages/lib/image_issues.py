"""Image-quality issues found by CleanVision (cleanlab's library) in the images table, decoded in memory.

CleanVision's Imagelab takes a torchvision-style dataset: an indexable of tuples that hold one PIL image. TableImages
is one over the kept rows of data/images that decodes lazily, one Parquet row group at a time, so a large table is
never held whole; Imagelab reads it in index order, twice (image properties, then hashes).

Use:
    images = TableImages(paths.IMAGES)
    found = find_issues(images, {"dark": {}, "blurry": {"threshold": 0.2}, "near_duplicates": {}})
    table = issue_table(images.ids, found, reject={"dark", "near_duplicates"})

Issue names, default thresholds, scores (0..1, low = worse) and flags are CleanVision's own. Its exact duplicates
are pixel-identical images (md5 of the pixels), near duplicates share a perceptual hash (phash, 8x8 by default).
"""

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cleanvision import Imagelab
from cleanvision.issue_managers.duplicate_issue_manager import DuplicateIssueManager
from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager
from cleanvision.utils.constants import DUPLICATE_ISSUE_TYPES_LIST, IMAGE_PROPERTY_ISSUE_TYPES_LIST
from PIL import Image

from . import params as P
from .codec import DecodeError, decode_image
from .errors import StageError
from .tables import shard_paths

# CleanVision's order, the image properties then the duplicates; a row's reason is the first rejecting issue in it.
# Duplicates come last because which member of a set is kept depends on what the other checks reject.
ISSUES = tuple(IMAGE_PROPERTY_ISSUE_TYPES_LIST) + tuple(DUPLICATE_ISSUE_TYPES_LIST)
DUPLICATES = tuple(DUPLICATE_ISSUE_TYPES_LIST)
# CleanVision's default params per issue; params.yaml may override exactly these keys.
DEFAULTS = {**ImagePropertyIssueManager().get_default_params(), **DuplicateIssueManager().get_default_params()}
HASH_TYPES = ("md5", "whash", "phash", "ahash", "dhash", "chash")  # duplicate_issue_manager.get_hash


# What params.yaml may set each CleanVision param to: thresholds and scores lie in 0..1.
RULES = {
    "threshold": dict(lo=0.0, hi=1.0),
    "color_threshold": dict(lo=0.0, hi=1.0),
    "normalizing_factor": dict(above=0.0),
    "iqr_factor": dict(lo=0.0),
    "hash_size": dict(kind=int, lo=2, hi=64),
}


def _unknown(key, name, allowed):
    near = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f"; did you mean {near[0]}?" if near else f" (CleanVision's: {', '.join(allowed)})"
    return StageError(f"params: {key} names {name!r}, not a CleanVision issue type{hint}")


def issue_list(params, key) -> list:
    """The list of CleanVision issue types at `key` (empty when absent); an unknown or repeated name is an error."""
    value = P.get(params, key, []) or []
    if not isinstance(value, list):
        raise StageError(f"params: {key}={value!r} must be a list of CleanVision issue types ({', '.join(ISSUES)})")
    for name in value:
        if name not in ISSUES:
            raise _unknown(key, name, ISSUES)
    if len(set(value)) != len(value):
        raise StageError(f"params: {key} lists {next(v for v in value if value.count(v) > 1)!r} twice")
    return value


def read_thresholds(params, key, checked) -> dict:
    """{issue: {param: value}} from the params block at `key` for every `checked` issue, in ISSUES order; empty where
    CleanVision's defaults hold. Unknown issues or params, and issues not checked, are one-line errors."""
    tree = P.get(params, key, {}) or {}
    if not isinstance(tree, dict):
        raise StageError(f"params: {key} must map issue types to their CleanVision params, got {tree!r}")
    overrides = {issue: {} for issue in ISSUES if issue in checked}
    for issue, values in tree.items():
        if issue not in ISSUES:
            raise _unknown(key, issue, ISSUES)
        if issue not in checked:
            raise StageError(
                f"params: {key}.{issue} is set but the issue is not checked (neither rejected nor reported)"
            )
        if not isinstance(values, dict):
            raise StageError(
                f"params: {key}.{issue}={values!r} must map CleanVision params to values, e.g. threshold: 0.2"
            )
        for name in values:
            if name not in DEFAULTS[issue]:
                allowed = ", ".join(DEFAULTS[issue]) or "none"
                raise StageError(f"params: {key}.{issue}.{name} is not a CleanVision param of {issue} ({allowed})")
            leaf = f"{key}.{issue}.{name}"
            value = P.choice(params, leaf, HASH_TYPES) if name == "hash_type" else P.number(params, leaf, **RULES[name])
            overrides[issue][name] = value
    return overrides


def flag_column(issue: str) -> str:
    return f"is_{issue}_issue"


def score_column(issue: str) -> str:
    return f"{issue}_score"


def set_column(issue: str) -> str:
    return f"{issue}_set"


class TableImages:
    """The kept rows of an images table as CleanVision's torchvision-style dataset: item i is (PIL image,).

    Only ids and row positions are held; the image bytes of one row group at a time. CleanVision runs it in one
    process (n_jobs=1, see find_issues), so the one-group cache is never copied into workers."""

    def __init__(self, path):
        self.path, self.files = path, shard_paths(path)
        if not self.files:
            raise StageError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
        ids, where = [], []
        for k, name in enumerate(self.files):
            shard = pq.ParquetFile(name)
            for g in range(shard.num_row_groups):
                try:
                    group = shard.read_row_group(g, columns=["id", "kept"])
                except (pa.ArrowInvalid, KeyError) as err:
                    raise StageError(f"{path} lacks id/kept: {str(err).splitlines()[0]}; rerun ingest") from None
                for r, (image_id, kept) in enumerate(zip(group["id"].to_pylist(), group["kept"].to_pylist())):
                    if kept:
                        ids.append(image_id)
                        where.append((k, g, r))
        if len(set(ids)) != len(ids):
            raise StageError(f"{path} has duplicate ids; rerun ingest")
        self.ids, self.where = ids, np.asarray(where, np.int64).reshape(-1, 3)
        self._group, self._images = None, None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> tuple:
        return (Image.fromarray(self.pixels(index)),)

    def pixels(self, index) -> np.ndarray:
        """Row `index`'s image as decode_image gives it (grey HxW or RGB HxWx3): CleanVision sees mode L or RGB."""
        k, g, r = (int(v) for v in self.where[index])
        if self._group != (k, g):
            self._images = pq.ParquetFile(self.files[k]).read_row_group(g, columns=["image"]).column("image")
            self._group = (k, g)
        try:
            return decode_image(self._images[r].as_py())
        except DecodeError as err:
            raise StageError(
                f"{self.path}: kept image {self.ids[index]} does not decode ({err}); rerun ingest"
            ) from None


@dataclass
class Found:
    issues: pd.DataFrame  # CleanVision's is_<issue>_issue and <issue>_score columns, one row per dataset index
    sets: dict  # {duplicate issue: [[index, ...], ...]}: CleanVision's sets, each sorted
    params: dict  # {issue: the params CleanVision ran with}: its defaults updated by the overrides


def find_issues(dataset, overrides: dict) -> Found:
    """CleanVision's checks of the issues named in `overrides` ({issue: {param: value}}) over `dataset`."""
    used = {issue: {**DEFAULTS[issue], **params} for issue, params in overrides.items()}
    if len(dataset) == 0 or not overrides:  # Imagelab refuses an empty dataset, and checks everything given nothing
        columns = {c: pd.Series([], dtype=float) for i in overrides for c in (flag_column(i), score_column(i))}
        return Found(pd.DataFrame(columns), {i: [] for i in overrides if i in DUPLICATES}, used)
    lab = Imagelab(torchvision_dataset=dataset, verbose=False)
    # One process: CleanVision hands the dataset to every task of its pool (chunk size 1 below 5000 images), so on
    # facial_expressions (2,037 photos, 2 cores) n_jobs=2 took 13-33 s where one process takes 7 s.
    lab.find_issues(issue_types=overrides, n_jobs=1, verbose=False)
    sets = {i: sorted(sorted(s) for s in lab.info[i]["sets"]) for i in overrides if i in DUPLICATES}
    return Found(lab.issues.sort_index(), sets, used)


def decide(ids, found: Found, reject) -> list:
    """The reason of each row ('' when kept): the first issue in ISSUES order that rejects it. Of a duplicate set,
    the member with the lowest id among those still kept is kept, the other members still kept are rejected."""
    reasons = [""] * len(ids)
    for issue in (i for i in ISSUES if i in reject):
        if issue in DUPLICATES:
            for members in found.sets.get(issue, []):
                for m in sorted((m for m in members if not reasons[m]), key=lambda m: ids[m])[1:]:
                    reasons[m] = issue
            continue
        for m in np.flatnonzero(found.issues[flag_column(issue)].to_numpy(bool)):
            reasons[m] = reasons[m] or issue
    return reasons


def set_labels(ids, sets) -> list:
    """Per row, the lowest id of its duplicate set (None outside any): one label per set, whatever is kept."""
    labels = [None] * len(ids)
    for members in sets:
        first = min(ids[m] for m in members)
        for m in members:
            labels[m] = first
    return labels


def issue_table(ids, found: Found, reject) -> pa.Table:
    """id, kept, reason, then per checked issue (ISSUES order) its flag and score (and set, for duplicates); rows
    sorted by id."""
    reasons = decide(ids, found, reject)
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    cols = {
        "id": pa.array([ids[i] for i in order], pa.string()),
        "kept": pa.array([not reasons[i] for i in order], pa.bool_()),
        "reason": pa.array([reasons[i] for i in order], pa.string()),
    }
    for issue in (i for i in ISSUES if i in found.params):
        cols[flag_column(issue)] = pa.array(found.issues[flag_column(issue)].to_numpy(bool)[order], pa.bool_())
        cols[score_column(issue)] = pa.array(found.issues[score_column(issue)].to_numpy(np.float64)[order])
        if issue in DUPLICATES:
            labels = set_labels(ids, found.sets[issue])
            cols[set_column(issue)] = pa.array([labels[i] for i in order], pa.string())
    return pa.table(cols)


def issue_summary(table: pa.Table, reject) -> dict:
    """{issue: {action, found, rejected[, sets]}} for the checked issues: found is CleanVision's flag (every member
    of a duplicate set), rejected the rows whose reason it is."""
    reasons = table.column("reason").to_pylist()
    out = {}
    for issue in (i for i in ISSUES if flag_column(i) in table.column_names):
        entry = {
            "action": "reject" if issue in reject else "report",
            "found": int(sum(table.column(flag_column(issue)).to_pylist())),
            "rejected": reasons.count(issue),
        }
        if issue in DUPLICATES:
            entry["sets"] = len({s for s in table.column(set_column(issue)).to_pylist() if s is not None})
        out[issue] = entry
    return out
