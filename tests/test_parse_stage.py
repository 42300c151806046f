"""`python -m stages.parse` end to end on small images tables: rows in = rows out, determinism, errors, contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.lib import tables
from stages.lib.codec import decode_png
from tests.helpers.parse_tables import run_in_process, stage_args, write_images_table

ROOT = Path(__file__).resolve().parent.parent


def run_stage(tmp, params, out="parsed"):
    params_file = tmp / f"params-{out}.yaml"
    params_file.write_text("parse: " + json.dumps(params) + "\n")
    env = dict(os.environ, FACECUR_PARAMS=str(params_file), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "stages.parse"] + stage_args(tmp, out),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def table(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parse_stage")
    ref = sorted((shared_data / "parsing_reference" / "images").glob("*.jpg"))
    colour = np.asarray(Image.open(ref[1]).convert("RGB").resize((300, 260)))  # not 512, not square
    grey = np.asarray(Image.open(ref[2]).convert("L").resize((350, 350)))
    rng = np.random.default_rng(0)
    items = [
        ("colour", colour),
        ("grey", grey),
        ("blank", np.full((128, 96), 200, np.uint8)),
        ("noise", rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)),
        ("broken", None, "corrupt_image"),
    ]
    write_images_table(tmp / "data" / "images", items)
    return tmp


FACEMESH = {
    "backend": "facemesh",
    "weights": "",
    "input_side": 512,
    "batch": 2,
    "device": "cpu",
    "min_detect_size": 192,
}


def test_facemesh_stage_every_kept_row_out_once(table):
    done = run_stage(table, FACEMESH)
    assert done.returncode == 0, done.stderr
    for noise in ("XNNPACK", "W0000", "absl", "inference_feedback"):
        assert noise not in done.stderr
    images = tables.read_frame(table / "data" / "images")
    parsed = tables.read_frame(table / "data" / "parsed")
    kept = images[images.kept]
    assert sorted(parsed.id) == sorted(kept.id) and len(parsed) == 4
    by_key = dict(zip(images.id, images.source_key))
    found = {by_key[i]: f for i, f in zip(parsed.id, parsed.face_found)}
    assert found == {"colour": True, "grey": True, "blank": False, "noise": False}
    for row in parsed.itertuples():
        label_map = decode_png(row.label_map)
        source = kept[kept.id == row.id].iloc[0]
        assert label_map.shape == (source.height, source.width)
        assert list(row.class_counts) == np.bincount(label_map.ravel(), minlength=19).tolist()
        assert sum(row.class_counts) == source.height * source.width
        assert (row.face_bbox is not None) == row.face_found
    metrics = json.loads((table / "parsed.json").read_text())
    assert metrics["images"] == 4 and metrics["faces_found"] == 2 and metrics["detection_rate"] == 0.5
    assert Image.open(table / "parsed.png").size[0] > 0


def test_rerun_is_byte_identical_and_contract_holds(table, monkeypatch):
    assert run_in_process(table, FACEMESH, "parsed_again", monkeypatch) == 0
    first = tables.shard_paths(str(table / "data" / "parsed"))
    again = tables.shard_paths(str(table / "data" / "parsed_again"))
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in again]
    checker = ROOT.parent / "shared" / "tools" / "check_contract.py"
    if checker.exists():
        done = subprocess.run([sys.executable, str(checker), str(table / "data")], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_bisenet_stage_random_checkpoint(table, monkeypatch):
    import torch

    from stages.lib.parsing.facexlib_nets import build_net

    weights = table / "parsing_bisenet.pth"
    torch.manual_seed(0)
    torch.save(build_net("bisenet").state_dict(), weights)
    params = dict(FACEMESH, backend="bisenet", weights=str(weights), input_side=64)
    assert run_in_process(table, params, "parsed_bisenet", monkeypatch) == 0
    parsed = tables.read_frame(table / "data" / "parsed_bisenet")
    assert len(parsed) == 4 and set(parsed.backend) == {"bisenet"} and set(parsed.parse_size) == {64}
    for row in parsed.itertuples():
        assert sum(row.class_counts) == row.width * row.height
        assert decode_png(row.label_map).shape == (row.height, row.width)


def test_missing_weights_stops_before_any_work(table, monkeypatch, capsys):
    params = dict(FACEMESH, backend="bisenet", weights=str(table / "nowhere" / "parsing_bisenet.pth"))
    assert run_in_process(table, params, "parsed_missing", monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "dvc import-url" in lines[0] and "nowhere/parsing_bisenet.pth" in lines[0]
    assert not (table / "data" / "parsed_missing").exists()


def test_bad_param_is_one_line(table, monkeypatch, capsys):
    assert run_in_process(table, dict(FACEMESH, input_side=100), "parsed_bad", monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parse.input_side" in err
