"""DVC must rerun a stage when any param it reads changes, including from its run-cache.

DVC's run-cache key is a hash of the stage's lock entry that leaves out every key named `size` or `nfiles`, at any
depth (they are file metadata under deps and outs, but the exclusion is recursive and reaches `params` too:
treeverse/dvc#10296). A param named `size` was therefore invisible to it: changing `rois.size.mouth` from 32 to 40
made `dvc repro` restore the 32-px crops from the run-cache and record 40 in dvc.lock. No param may carry such a name.
"""

import copy

import yaml
from dvc.stage.cache import _get_cache_hash

from tests.conftest import ROOT

HASH_EXCLUDED = {"size", "nfiles"}  # dvc_data.hashfile.meta.Meta.PARAM_SIZE, PARAM_NFILES


def leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, prefix + (key,))
    else:
        yield prefix


def lock_stages():
    return yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]


def test_no_param_is_named_like_file_metadata():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = [".".join(path) for path in leaves(params) if HASH_EXCLUDED & set(path)]
    assert not bad, f"DVC's run-cache ignores these params (treeverse/dvc#10296): {bad}"


def test_changing_any_param_a_stage_reads_changes_its_run_cache_key():
    stages = lock_stages()
    checked = 0
    for name, entry in stages.items():
        for params_file, values in (entry.get("params") or {}).items():
            for path in leaves(values):
                changed = copy.deepcopy(entry)
                node = changed["params"][params_file]
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = ["a value never run"]
                before = _get_cache_hash(copy.deepcopy(entry), key=True)
                assert _get_cache_hash(changed, key=True) != before, f"{name}: {'.'.join(path)}"
                checked += 1
    assert checked > 50  # every stage's params, leaf by leaf
