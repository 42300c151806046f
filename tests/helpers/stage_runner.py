"""Run a stage the way DVC does, in a scratch project: its own params.yaml, the real code."""

import copy
import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def default_params():
    with open(ROOT / "params.yaml") as f:
        return yaml.safe_load(f)


def merge(base, overrides):
    """Nested dict update: {"ingest": {"source": "x"}} changes only ingest.source."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# The committed pretrained weights. Trained weights (models/curator, models/cyclegan) are stage outputs: the scratch
# project writes its own, so a test never overwrites the repository's.
PRETRAINED = ("judge", "parsing")


def scratch_project(path, overrides=None):
    """A folder that looks like the project root: stages/ and the pretrained models/ linked, params.yaml written."""
    path.mkdir(parents=True, exist_ok=True)
    links = {"stages": ROOT / "stages", **{f"models/{m}": ROOT / "models" / m for m in PRETRAINED}}
    for name, target in links.items():
        link = path / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target)
    with open(path / "params.yaml", "w") as f:
        yaml.safe_dump(merge(default_params(), overrides or {}), f)
    return path


def stage_command(path, stage, *args, nproc=None):
    """(argv, env) that run `stages.<stage>` in the project at `path`: one process, or `nproc` ranks under torchrun
    (`--standalone`: a free port of its own, so that tests running at once do not meet)."""
    env = dict(os.environ, PYTHONPATH=str(path))
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*launcher, "-m", f"stages.{stage}", *args], env


def run_stage(path, stage, *args, check=True, nproc=None):
    cmd, env = stage_command(path, stage, *args, nproc=nproc)
    proc = subprocess.run(cmd, cwd=path, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"stages.{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def assert_contract(project, shared_data):
    """The tables under the project's data/ pass ../shared/tools/check_contract.py."""
    tool = shared_data.parent / "tools" / "check_contract.py"
    proc = subprocess.run([sys.executable, str(tool), "data"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
