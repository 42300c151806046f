"""The README's main command past its install step (CI has run that), on the demo, in a temporary copy of the
project with tiny params.

It then checks every stage's outputs, and the contract with ../shared/tools/check_contract.py.
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, SHARED_DATA
from tests.helpers.project_copy import copy_project
from tests.helpers.stage_runner import assert_contract, merge

TINY = {
    "ingest": {"demo": {"n": 120, "side": 192}},
    "curator": {"folds": 3},
    "parse": {"workers": 1},  # same bytes for any count (test_parse_workers.py); spares two workers' start-up
    # identity off as on the demo, geometry off: test_evaluate runs the stage with both on
    "evaluate": {"resamples": 200, "geometry": False},
    # One epoch reaches every stage; the mouth gets the fewest (~540 steps, ~18 s of CPU) that gave a smile the judge
    # reads on three seeds: transfer_gain 0.80 [0.60, 1.00], 0.73 [0.47, 0.93], 0.67 [0.40, 0.87] for seeds 0, 1, 2
    # (n=15). 60 epochs: 0.80-1.00 in 23 s; 30 epochs: 0.33, 0.00, 0.07; lr 0.002 with 40 epochs: lower ends 0.27,
    # 0.13, 0.27. 2-core VM, 2026-12-01. With the mouth's weights averaged (params.yaml's train.ema) on an AMD EPYC
    # (Zen 4) VM, 2026-12-02: 0.80 [0.60, 1.00], 0.53 [0.33, 0.80], 0.67 [0.40, 0.87] (last weights: the same but
    # seed 1, 0.60 [0.33, 0.80]); hence the floor below, 0.2, not 0.3, which seed 1 (the default) cleared by 0.03.
    "train": {
        "epochs": {"eyes": 1, "mouth": 45, "face": 1},
        "epochs_decay": {"eyes": 0, "mouth": 22, "face": 0},
        "ngf": 8,
        "ndf": 8,
        "n_blocks": {"eyes": 1, "mouth": 1, "face": 1},
        # the expression classifier's fit cost eyes and face 6.5 s of their 15 here; test_cyclegan trains, resumes
        # and checks it (lambda_expression 1)
        "lambda_expression": {"eyes": 0.0, "mouth": 0.0, "face": 0.0},
    },
}


def readme_main_command():
    """The first fenced command of the README's quickstart, as written there."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line and not line.startswith("#")][0]


def pipeline_part(command: str) -> str:
    """The command past its install step: the suite runs under the very `pip install -r requirements.txt` that the
    README's command starts with (.ci/run), and repeating it cost 14 s of a 165 s fixture (2-core VM, 2026-12-02)."""
    install, sep, rest = command.partition(" && ")
    assert install == "pip install -r requirements.txt" and sep, command
    return rest


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    project = tmp_path_factory.mktemp("clone") / "main"
    project.mkdir()
    copy_project(ROOT, project)
    params = merge(yaml.safe_load((project / "params.yaml").read_text()), TINY)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if SHARED_DATA.is_dir():
        os.symlink(SHARED_DATA.parent, project.parent / "shared")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(
        pipeline_part(readme_main_command()), shell=True, cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project, params


def test_every_stage_wrote_its_outputs(demo_run):
    project, params = demo_run
    images = pd.read_parquet(project / "data" / "images")
    assert len(images) == params["ingest"]["demo"]["n"]
    parsed = pd.read_parquet(project / "data" / "parsed")
    assert set(parsed.id) == set(images[images.kept].id)
    assert parsed.face_found.mean() > 0.7
    for stage in ("filter_masks", "filter_emotion"):
        table = pd.read_parquet(project / "data" / "filtered" / f"{stage}.parquet")
        assert table.kept.any() and (~table.kept).any(), stage
    for roi in params["rois"]["names"]:
        manifest = pd.read_parquet(project / "data" / "rois" / f"{roi}.parquet")
        assert set(manifest.domain.dropna()) == {"A", "B"}
        assert (project / "models" / "cyclegan" / roi / "generator_AB.pt").is_file()
        metrics = json.loads((project / "eval" / roi / "metrics.json").read_text())
        assert metrics["outside_changed_px"] == metrics["control_outside_changed_px"] == 0
        lo, hi = metrics["transfer_gain_ci"]
        assert metrics["n_test"] > 0 and lo <= metrics["transfer_gain"] <= hi
        assert metrics["control_transfer_gain_ci"][0] <= 0 and metrics["identity_kept_rate"] is None
    mouth = json.loads((project / "eval" / "mouth" / "metrics.json").read_text())
    assert mouth["transfer_gain_ci"][0] >= 0.2, mouth["transfer_gain_ci"]  # the floor: the mouth model must smile
    combined = json.loads((project / "eval" / "combined" / "metrics.json").read_text())
    assert combined["outside_changed_px"] == 0 and combined["n_test"] > 0 and combined["kid_roi"] is None
    assert (project / "plots" / "evaluate" / "summary.png").stat().st_size > 0
    for name in ("ingest", "parse", "filter_masks", "filter_emotion", "extract_rois"):
        assert json.loads((project / "metrics" / f"{name}.json").read_text()), name


def test_outputs_keep_the_contract(demo_run, shared_data):
    project, _ = demo_run
    assert_contract(project, shared_data)


def test_repro_again_is_a_no_op(demo_run):
    project, _ = demo_run
    proc = subprocess.run(["dvc", "status"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0 and "changed" not in proc.stdout, proc.stdout


def test_attention_mask_does_not_collapse_on_the_demo(demo_run, tmp_path):
    """GANimation-style attention collapses to "keep the input" (mask 0) under a mask penalty from step 0 (#11). With
    the guard (no penalty during the warm-up, then only above the budget) it stays open on the demo's mouths; the
    same penalty without the guard drives it lower in the same steps."""
    import numpy as np
    import torch

    from stages.lib.codec import decode_png
    from stages.lib.cyclegan import read_config
    from stages.lib.networks import load_generator
    from stages.lib.training import Paths, train_roi

    project, params = demo_run
    attention = {
        "generator": "attention",
        "epochs": {"mouth": 4},
        "epochs_decay": {"mouth": 0},
        "lambda_mask": 1.0,
        "lambda_expression": {"mouth": 0.0},
        "device": "cpu",
    }

    def train(name, **guard):
        cfg = read_config(merge(params, {"train": {**attention, **guard}}), "mouth")
        paths = Paths(
            "mouth",
            manifest=str(project / "data/rois/mouth.parquet"),
            model_dir=str(tmp_path / name),
            live_dir=str(tmp_path / name / "live"),
            metrics=str(tmp_path / name / "metrics.json"),
        )
        metrics = train_roi(cfg, paths)
        history = torch.load(paths.checkpoint, weights_only=True)["history"]
        return cfg, metrics, [record["mask_area"] for record in history], paths

    cfg, metrics, guarded, paths = train("guarded")
    assert metrics["steps"] >= 40 and metrics["generator"] == "attention"
    assert min(guarded) > 0.5 * cfg.mask_budget, guarded
    _, _, unguarded, _ = train("unguarded", mask_warmup=0.0, mask_budget=0.0)
    assert unguarded[-1] < guarded[-1] - 0.02, (unguarded, guarded)
    crops = pd.read_parquet(project / "data/rois/mouth.parquet").query("kept").crop[:8]
    x = torch.from_numpy(np.stack([decode_png(c) for c in crops])).permute(0, 3, 1, 2).float() / 127.5 - 1
    out, mask = load_generator(paths.generator).edit(x)
    assert not torch.equal(out, x) and mask.mean() > 0.5 * cfg.mask_budget
