"""Atomic outputs: the user's umask, and nothing left behind by a killed run."""

import os
import stat

import pyarrow as pa
import pytest

from stages.lib.tables import ShardWriter, write_bytes_atomic, write_table_atomic

SCHEMA = pa.schema([("id", pa.string())])


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_keep_the_users_umask(tmp_path, umask_027):
    with ShardWriter(str(tmp_path / "images"), SCHEMA) as out:
        out.write({"id": ["a"]})
    write_table_atomic(pa.table({"id": ["a"]}), str(tmp_path / "filtered" / "t.parquet"))
    write_bytes_atomic(b"{}", str(tmp_path / "metrics" / "m.json"))
    assert mode(tmp_path / "images") == 0o750
    assert mode(tmp_path / "images" / "part-00000.parquet") == 0o640
    assert mode(tmp_path / "filtered" / "t.parquet") == mode(tmp_path / "metrics" / "m.json") == 0o640


def test_a_killed_runs_leftovers_are_cleared_by_the_next_run(tmp_path):
    # What a SIGKILL mid-write leaves: the scratch folder, a half-written file, and an old output renamed aside.
    (tmp_path / ".tmp-images-abc123").mkdir()
    (tmp_path / ".tmp-images-abc123" / "part-00000.parquet").write_bytes(b"half")
    (tmp_path / ".old-images-def456").mkdir()
    (tmp_path / ".tmp-t.parquet-x1").write_bytes(b"half")
    (tmp_path / ".tmp-other-zz").mkdir()  # another output's: not ours to remove
    with ShardWriter(str(tmp_path / "images"), SCHEMA) as out:
        out.write({"id": ["a"]})
    write_table_atomic(pa.table({"id": ["a"]}), str(tmp_path / "t.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-other-zz", "images", "t.parquet"]
