"""Ingest's grouping pass (`ingest.split_by: group`): the signatures of pass 1, the groups settled between the
passes, and each row's `group` and drawn `split` in pass 2. With `split_by: id` every row is its own group and
its split is drawn from its id, as before groups existed.

Only images whose split ingest draws are signed: a source's own split (CelebA, FER's Usage) is kept, so such rows
cost nothing here. Each signature is 128 floats and 32 bytes; the images themselves are not held.
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from .face_signature import signature_of_bytes
from .groups import assign_groups, split_from_group
from .image_table import split_from_id


class Signatures:
    """Pass 1's side job: {content id: (embedding or None, hash)} of each kept image without a source split, computed
    in `workers` processes (dlib holds the GIL, so ingest's decoding threads cannot share the work)."""

    def __init__(self, enabled: bool, workers: int):
        self.enabled, self.workers, self.by_id, self._pool = enabled, workers, {}, None

    def __enter__(self):
        if self.enabled:
            # spawn: ingest's decoding threads are running, and forking a threaded process can deadlock the child
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def add(self, rows: list, records: list):
        if not self.enabled:
            return
        todo = {}
        for row, record in zip(rows, records):
            if row["kept"] and record.split is None and row["id"] not in self.by_id:
                todo.setdefault(row["id"], row["image"])
        results = self._pool.map(signature_of_bytes, list(todo.values()), chunksize=8)
        self.by_id.update(zip(todo, results))

    def groups(self, copies: dict, settled: dict, identity_distance: float, name_pattern=None) -> dict:
        """{content id: group id} over the signed images that are still kept once the copies are settled (a label
        conflict rejects every copy, and a rejected image must not link two groups). `name_pattern` (a compiled
        regex or None) reads an identity name from each kept copy's file name: images sharing one share a group."""
        if not self.enabled:
            return {}
        ids = [cid for cid in sorted(self.by_id) if _still_kept(copies[cid], settled)]
        embeddings = [self.by_id[cid][0] for cid in ids]
        hashes = [self.by_id[cid][1] for cid in ids]
        names = [_names(copies[cid], settled, name_pattern) for cid in ids] if name_pattern else None
        return assign_groups(ids, embeddings, hashes, identity_distance, names)

    def metrics(self, groups: dict):
        """What grouping found, for metrics/ingest.json; None when it did not run."""
        if not self.enabled:
            return None
        sizes = {}
        for group in groups.values():
            sizes[group] = sizes.get(group, 0) + 1
        faces = sum(self.by_id[cid][0] is not None for cid in groups)
        return {
            "grouped": len(groups),
            "faces_found": faces,
            "groups": len(sizes),
            "largest_group": max(sizes.values(), default=0),
        }


def _names(rows, settled, pattern) -> list:
    """The identity names `pattern` reads from the file names of a content id's kept copies: its first group, or the
    whole match when it has none."""
    found = set()
    for source_key in _kept_copies(rows, settled):
        match = pattern.search(os.path.basename(source_key or ""))
        if match:
            found.add(match.group(1) if pattern.groups else match.group(0))
    return sorted(found)


def _kept_copies(rows, settled) -> list:
    """The source keys of a content id's copies that are still kept once the copies are settled."""
    return [key for position, key, _, reason in rows if settled.get(position, (None, reason))[1] == ""]


def _still_kept(rows, settled) -> bool:
    return bool(_kept_copies(rows, settled))


def apply_groups(batch: dict, groups: dict, cfg: dict) -> dict:
    """Fill one batch's `group` and, where the source gave none, its `split`. A copy (`<id>-dupN`) joins the group
    of the bytes it repeats; every other row is a group of its own."""
    draw = split_from_group if cfg["split_by"] == "group" else split_from_id
    for i, row_id in enumerate(batch["id"]):
        group = groups.get(row_id.partition("-dup")[0], row_id)
        batch["group"][i] = group
        if not batch["split"][i]:  # as before groups: a source split of None or "" is drawn
            batch["split"][i] = draw(group, cfg["test_fraction"])
    return batch
