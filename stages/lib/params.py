"""params.yaml access with validation: a bad value is one line naming the key and what is allowed."""
import os
import random

import numpy as np
import yaml

from .errors import StageError

PARAMS_FILE = os.environ.get("FACECUR_PARAMS", "params.yaml")
_MISSING = object()


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
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise StageError(f"params: {key} is missing")
        node = node[part]
    return node


def choice(params, key, allowed, default=_MISSING):
    value = get(params, key, default)
    if value not in allowed:
        raise StageError(f"params: {key}={value!r} is not one of {', '.join(map(str, allowed))}")
    return value


def number(params, key, kind=float, lo=None, hi=None, default=_MISSING):
    """A number in [lo, hi]; `kind=int` also rejects non-integers."""
    value = get(params, key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer()
    if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        ok = False
    if not ok:
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
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


def device(params, key):
    """`auto` picks cuda when available, else cpu; `cpu` or `cuda` force one."""
    import torch

    value = choice(params, key, ["auto", "cpu", "cuda"], default="auto")
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
