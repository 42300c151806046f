"""params.yaml access with validation: a bad value is one line naming the key and what is allowed.

Strict: every read is recorded, and a stage ends its params reading with `check_unknown(params, blocks)`, so that a
key in its blocks that no read asked for (`parse.visibilty`, `train.lrr`) is a one-line error naming it and the
nearest key it does read, instead of being silently ignored.
"""

import difflib
import os
import random

import numpy as np
import yaml

from .errors import StageError
from .labels import EMOTIONS

PARAMS_FILE = os.environ.get("FACECUR_PARAMS", "params.yaml")
_MISSING = object()
BLOCKS = (
    "emotions",
    "rois",
    "ingest",
    "parse",
    "filter_quality",
    "filter_masks",
    "curator",
    "filter_emotion",
    "extract_rois",
    "train",
    "evaluate",
    "data_card",
)
_READ = set()  # dotted keys read in this process


def load(path=PARAMS_FILE) -> dict:
    if not os.path.exists(path):
        raise StageError(f"{path} not found; run stages from the project root")
    with open(path) as f:
        try:
            return yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise StageError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None


def get(params: dict, key: str, default=_MISSING):
    """The value at dotted `key`, e.g. `get(p, "ingest.source")`."""
    _READ.add(key)
    node, parts = params, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            if depth and not isinstance(node, dict):  # e.g. a scalar where one value per ROI is wanted
                parent = ".".join(parts[:depth])
                raise StageError(f"params: {parent} is {node!r}, not a mapping: {key} is wanted")
            raise StageError(f"params: {key} is missing")
        node = node[part]
    return node


def choice(params, key, allowed, default=_MISSING):
    value = get(params, key, default)
    if value not in allowed:
        raise StageError(f"params: {key}={value!r} is not one of {', '.join(map(str, allowed))}")
    return value


def number(params, key, kind=float, lo=None, hi=None, default=_MISSING, above=None):
    """A number in [lo, hi] (and > `above` when given); `kind=int` also rejects non-integers. A number YAML read as
    a string (PyYAML takes `1e-4`, without a dot, for text) is accepted when it parses as one."""
    value = get(params, key, default)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise StageError(f"params: {key}={value!r} is text, not a number") from None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer()
    if ok and (
        (lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above)
    ):
        ok = False
    if not ok:
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        bounds += f" and > {above}" if above is not None else ""
        raise StageError(f"params: {key}={value!r} must be {'an integer' if kind is int else 'a number'}{bounds}")
    return kind(value)


def flag(params, key, default=_MISSING):
    value = get(params, key, default)
    if not isinstance(value, bool):
        raise StageError(f"params: {key}={value!r} must be true or false")
    return value


def text(params, key, default=_MISSING):
    value = get(params, key, default)
    if value is None or not isinstance(value, str):
        raise StageError(f"params: {key}={value!r} must be a string")
    return value


def regex(params, key, default=_MISSING):
    """A compiled regular expression, or None for an empty string."""
    import re

    value = text(params, key, default)
    if not value:
        return None
    try:
        return re.compile(value)
    except re.error as e:
        raise StageError(f"params: {key}={value!r} is not a regular expression ({e})") from None


def emotions(params) -> tuple:
    """(source, target): domain A and domain B of every stage after the masks filter; they must differ."""
    source = choice(params, "emotions.source", EMOTIONS)
    target = choice(params, "emotions.target", EMOTIONS)
    if source == target:
        raise StageError(f"params: emotions.source and emotions.target are both {source!r}; they must differ")
    return source, target


def roi_side(params, roi, lo, hi=None) -> tuple:
    """(rois.side.<roi>, train.n_down.<roi>), checked together by whichever stage reads them first: the generator
    halves the crop n_down times, so the side must divide by 2 ** n_down."""
    side = number(params, f"rois.side.{roi}", int, lo, hi)
    n_down = number(params, f"train.n_down.{roi}", int, 1, 4)
    if side % 2**n_down:
        raise StageError(
            f"params: rois.side.{roi}={side} must be divisible by {2**n_down} "
            f"(train.n_down.{roi}={n_down} stride-2 downsamplings)"
        )
    return side, n_down


def known(*keys):
    """Keys (or whole sub-blocks) a stage accepts but reads only in some configurations (ingest.demo when the
    source is a folder, parse.device for FaceMesh)."""
    _READ.update(keys)


def _leaves(tree, prefix):
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}.{k}")
    else:
        yield prefix


def _covered(key: str, read: set) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in read for i in range(1, len(parts) + 1))


def check_unknown(params: dict, blocks, roi_names=()):
    """After a stage has read its params: any key under `blocks` that no read touched (nor a parent of it) is an
    error naming the nearest key that was read, as are top-level blocks the project does not have. Per-ROI keys
    (`train.epochs.face`) count as known for every ROI in `roi_names` once one ROI's was read."""
    unknown_blocks = [b for b in params if b not in BLOCKS]
    if unknown_blocks:
        near = difflib.get_close_matches(str(unknown_blocks[0]), BLOCKS, n=1)
        hint = f"; did you mean {near[0]}?" if near else f"; the blocks are {', '.join(BLOCKS)}"
        raise StageError(f"params: unknown block {unknown_blocks[0]!r}{hint}")
    rois = set(roi_names)

    def generic(key):  # every ROI's key as one: train.epochs.face -> train.epochs.<roi>
        return ".".join("<roi>" if part in rois else part for part in key.split("."))

    read = {generic(k) for k in _READ}
    for block in blocks:
        for key in _leaves(params.get(block, {}), block):
            if not _covered(generic(key), read):
                near = difflib.get_close_matches(generic(key), sorted(read), n=1, cutoff=0.6)
                roi = next((part for part in key.split(".") if part in rois), "<roi>")
                hint = f"; did you mean {near[0].replace('<roi>', roi)}?" if near else ""
                raise StageError(f"params: unknown key {key}{hint}")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow), for pool sizes."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_torch_threads(threads: int = 1) -> int:
    """Pin torch's intra-op threads to `threads` (OMP_NUM_THREADS, where the user sets it, wins); returns the count.

    The count changes how sums are split, so it changes result bits: a fixed count gives the same bytes on every
    machine, where torch's default (one thread per core) does not. One thread is the default because extra threads
    buy nothing here: on the 2-core VM with other jobs running, train_curator took 12 s on one thread and 31-85 s on
    two (a waiting thread spins on the core its partner needs), with the same bytes; quiet, two threads gave the
    same wall time for twice the CPU (2026-12-01). More cores: more processes (parse.workers, torchrun), or a GPU.
    """
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS") or threads)
    torch.set_num_threads(threads)
    return threads


def device(params, key):
    """`auto` picks cuda when available, else cpu; `cpu` or `cuda` force one."""
    value = choice(params, key, ["auto", "cpu", "cuda"], default="auto")
    import torch  # after the check: a misspelt value is reported without torch's second of import

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cuda" and not torch.cuda.is_available():
        raise StageError(f"params: {key}=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(value)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
