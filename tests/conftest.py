import os
from pathlib import Path

import pytest

# Two cores, two xdist workers: the stages the tests start as subprocesses (and dvc repro's) get one intra-op thread
# each, as the workers do (_quiet_threads), so they do not fight over the cores; the mouth training of the end-to-end
# test took 39 s of CPU with two threads and 21 s with one, in the same 22 s of wall time.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, the real photos; skipped when absent, except under CI where it must be there."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared photos are missing at {SHARED_DATA}")
        pytest.skip(f"shared photos not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory, worker_id) -> Path:
    """The demo DAG (ingest through extract_rois) in a scratch project, built once for every xdist worker."""
    from tests.helpers.demo_dag import demo_dag, shared_root

    return demo_dag(shared_root(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def facemesh():
    """The FaceMesh parser at params.yaml's min_detect_size, closed after the module that asked for it."""
    from stages.lib.parsing.facemesh import FaceMeshParser

    parser = FaceMeshParser(min_detect_size=192)
    yield parser
    parser.close()


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    # Two cores: one intra-op thread keeps parallel tests from oversubscribing.
    import torch

    torch.set_num_threads(1)


# The slowest files (the DAG builders, torchrun, Ray), longest first: xdist hands out files in collection order, so
# starting these first keeps one worker from finishing the quick files and then waiting alone on a slow one.
SLOW_FIRST = (
    "test_end_to_end.py",
    "test_extract_rois.py",
    "test_filters_demo.py",
    "test_ddp.py",
    "test_parse_workers.py",
    "test_cyclegan.py",
    "test_ingest.py",
    "test_evaluate_stage.py",
    "test_data_card.py",
    "test_image_folder.py",
    "test_groups.py",
    "test_parse_visibility.py",
    "test_filter_quality.py",
    "test_evaluate.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
