"""`parse.workers` and `parse.engine`: worker processes and Ray actors write the in-process run's shards byte for byte,
and their params are checked like every other."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.lib import tables
from stages.lib.parsing.workers import ROWS_PER_WORKER, resolve_workers
from tests.helpers.parse_tables import photo_items, run_in_process, write_images_table

# Eight rows a chunk: the 40 kept rows below make five chunks, so two workers both get several.
PARAMS = {"backend": "facemesh", "weights": "", "input_side": 512, "batch": 8, "device": "cpu", "min_detect_size": 192}


@pytest.fixture(scope="module")
def table(shared_data, tmp_path_factory):
    """38 real photos, one of them grey, a blank picture (no face), and a rejected row; then the in-process run."""
    tmp = tmp_path_factory.mktemp("parse_workers")
    photos = list(photo_items(sorted((shared_data / "facial_expressions" / "images").glob("*.jpg"))[:38]))
    grey = np.asarray(Image.fromarray(photos[0][1]).convert("L"))
    items = photos + [("grey", grey), ("blank", np.full((120, 90), 128, np.uint8)), ("rejected", None, "too_small")]
    write_images_table(tmp / "data" / "images", items)
    with pytest.MonkeyPatch.context() as mp:
        assert run_in_process(tmp, dict(PARAMS, workers=1), "parsed_1", mp) == 0
    return tmp


def shard_bytes(tmp, out):
    return [Path(p).read_bytes() for p in tables.shard_paths(str(tmp / "data" / out))]


def assert_same_as_in_process(tmp, out, workers, engine):
    assert shard_bytes(tmp, out) == shard_bytes(tmp, "parsed_1")
    assert (tmp / f"{out}.png").read_bytes() == (tmp / "parsed_1.png").read_bytes()  # the contact sheet too
    metrics = json.loads((tmp / f"{out}.json").read_text())
    first = json.loads((tmp / "parsed_1.json").read_text())
    assert (metrics["workers"], metrics["engine"], first["workers"], first["engine"]) == (workers, engine, 1, "local")
    assert metrics["images"] == 40 and metrics["faces_found"] == first["faces_found"] >= 37
    for m in (metrics, first):
        assert 0 < m["model_cpu_seconds"] < m["cpu_seconds"] and 0 < m["share_outside_model_cpu"] < 1


def test_two_worker_processes_write_the_in_process_bytes(table, monkeypatch):
    assert run_in_process(table, dict(PARAMS, workers=2), "parsed_2", monkeypatch) == 0
    assert_same_as_in_process(table, "parsed_2", 2, "local")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, about its context's fields
def test_ray_actors_write_the_in_process_bytes(table, monkeypatch):
    """The stage starts a local Ray instance as `dvc repro` would, and stops it: a stage skips the interpreter's
    teardown (errors.run_stage), so Ray's own atexit shutdown never runs."""
    ray = pytest.importorskip("ray")
    try:
        assert run_in_process(table, dict(PARAMS, workers=2, engine="ray"), "parsed_ray", monkeypatch) == 0
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
    assert_same_as_in_process(table, "parsed_ray", 2, "ray")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"workers": 0}, "params: parse.workers=0 must be auto or an integer in [1, 4096]"),
        ({"workers": "all"}, "params: parse.workers='all' must be auto or an integer in [1, 4096]"),
        ({"engine": "spark"}, "params: parse.engine='spark' is not one of local, ray"),
    ],
)
def test_bad_workers_or_engine_is_one_line(table, monkeypatch, capsys, override, message):
    assert run_in_process(table, dict(PARAMS, **override), "parsed_bad", monkeypatch) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_weights_stop_before_any_worker_starts(table, monkeypatch, capsys, engine):
    (table / "garbage.pth").write_bytes(b"not a checkpoint")
    params = dict(PARAMS, backend="bisenet", weights=str(table / "garbage.pth"), workers=2, engine=engine)
    assert run_in_process(table, params, "parsed_badweights", monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "garbage.pth is not a loadable torch checkpoint" in err
    assert not (table / "data" / "parsed_badweights").exists()


def test_an_actors_stage_error_is_found_in_rays_wrapping():
    from stages.lib.errors import StageError
    from stages.lib.parsing.ray_engine import stage_error_in

    died = RuntimeError(
        "The actor died in its creation task\n  File x\nstages.lib.errors.StageError: parse.weights: bad"
    )
    assert stage_error_in(died) == "parse.weights: bad"
    try:
        raise KeyError("wrapper") from StageError("params: one line")
    except KeyError as err:
        assert stage_error_in(err) == "params: one line"
    assert stage_error_in(ValueError("unrelated")) is None


def test_ray_missing_is_one_line_saying_how_to_install(table, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert run_in_process(table, dict(PARAMS, engine="ray"), "parsed_noray", monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'ray[data]==" in err


def test_how_many_workers():
    cfg = {"batch": 8, "workers": "auto", "device": None}
    assert resolve_workers(cfg, ROWS_PER_WORKER) == 1  # small runs stay in-process
    assert resolve_workers(cfg, 0) == 1
    assert resolve_workers(dict(cfg, workers=3), 40) == 3
    assert resolve_workers(dict(cfg, workers=8), 20) == 3  # no more workers than chunks
    assert resolve_workers(dict(cfg, workers=4, device=torch.device("cuda")), 10_000) == 1  # one model on the GPU
    assert resolve_workers(dict(cfg, workers=4, device=torch.device("cpu")), 10_000) == 4
