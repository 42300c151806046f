"""The demo DAG that tests read stage outputs from: ingest through extract_rois, run once per test session.

pytest-xdist runs test files in several worker processes, each with its own session; the first worker to ask builds
the DAG in the folder all workers share (the parent of their base temp), the others wait on a file lock and reuse it.
Tests that change these outputs must rerun a stage byte-identically or work in a copy.
"""

from pathlib import Path

from filelock import FileLock

from tests.helpers.stage_runner import run_stage, scratch_project

# The demo as params.yaml has it (300 faces at 256 px) with the curator's demo settings spelt out, so tuning
# params.yaml does not move the filter tests' precision and recall bars.
DEMO = {
    "ingest": {"source": "demo", "demo": {"n": 300, "side": 256, "seed": 0}},
    "curator": {"backbone": "judge", "input": "grey_masks", "folds": 5, "epochs": 30, "lr": 0.003},
    # the same bytes for any worker count (tests/test_parse_workers.py); one spares the two workers' start-up while
    # the other xdist worker needs the cores
    "parse": {"workers": 1},
}
CHAIN = ("ingest", "parse", "filter_quality", "filter_masks", "train_curator", "filter_emotion", "extract_rois")


def shared_root(tmp_path_factory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def demo_dag(root: Path) -> Path:
    """The project folder under `root` with every stage of CHAIN run; built on the first call, reused after."""
    project, done = root / "demo_dag", root / "demo_dag.done"
    with FileLock(str(root / "demo_dag.lock")):
        if not done.exists():
            scratch_project(project, DEMO)
            for stage in CHAIN:
                run_stage(project, stage)
            done.touch()
    return project
