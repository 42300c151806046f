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


def write_faces(root, image_ids, parse_ids, shard_rows=3):
    """An images table sharded every `shard_rows` rows and a one-file parse table, in a scratch project `root`."""
    with ShardWriter(str(root / "data/images"), pa.schema([("id", pa.string()), ("image", pa.binary())]), 1) as out:
        for k in range(0, len(image_ids), shard_rows):
            chunk = image_ids[k : k + shard_rows]
            out.write({"id": chunk, "image": [i.encode() for i in chunk]})
    parsed = pa.table({"id": parse_ids, "face_bbox": [[len(i), 0, 1, 1] for i in parse_ids]})
    write_table_atomic(parsed, str(root / "data/parsed/part-00000.parquet"))


# read_rows 2: the two tables are read in chunks that fall differently (parse lacks id3), so the join meets rows of
# the other table's next chunk
@pytest.mark.parametrize("read_rows", [2, 64])
def test_streamed_join_equals_the_whole_join_and_refuses_tables_out_of_step(tmp_path, monkeypatch, read_rows):
    from stages.lib import tables
    from stages.lib.errors import StageError
    from stages.lib.tables import iter_faces, load_faces

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tables, "READ_ROWS", read_rows)
    image_ids = [f"id{k}" for k in (5, 1, 9, 3, 7, 2, 8)]  # table order, not sorted
    write_faces(tmp_path, image_ids, [i for i in image_ids if i != "id3"])  # id3: no parse row
    wanted = ["id1", "id3", "id7", "id8", "id99"]  # id99: in neither table
    batches = list(iter_faces(wanted, ["image"], ["face_bbox"], batch_rows=3))
    assert [len(rows) for rows in batches] == [3, 1]  # equal batches across the shards' row groups
    streamed = {row["id"]: row for rows in batches for row in rows}
    assert streamed == load_faces(wanted, ["image"], ["face_bbox"])
    assert [row["id"] for rows in batches for row in rows] == ["id1", "id3", "id7", "id8"]  # the images' order
    assert "face_bbox" not in streamed["id3"] and streamed["id7"]["face_bbox"] == [3, 0, 1, 1]

    write_faces(tmp_path, image_ids, ["id8", "id1", "id7"])  # parse rows in another order
    with pytest.raises(StageError, match="not in the order of data/images"):
        list(iter_faces(wanted, ["image"], ["face_bbox"]))
    with pytest.raises(StageError, match="lacks columns"):
        list(iter_faces(wanted, ["image"], ["label_map"]))


def test_shards_hold_whole_row_groups_whatever_the_writes_chunking(tmp_path):
    import pyarrow.parquet as pq

    from stages.lib.tables import ROW_GROUP_ROWS

    ids = [f"r{i}" for i in range(2 * ROW_GROUP_ROWS + 37)]
    for name, step in (("by_16", 16), ("by_7", 7), ("whole", len(ids))):
        with ShardWriter(str(tmp_path / name), SCHEMA) as out:
            for k in range(0, len(ids), step):
                out.write({"id": ids[k : k + step]})
    files = [tmp_path / name / "part-00000.parquet" for name in ("by_16", "by_7", "whole")]
    meta = pq.ParquetFile(files[0]).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 37]
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    assert pq.read_table(files[0]).column("id").to_pylist() == ids


def test_a_full_shard_is_closed_and_the_next_write_opens_another(tmp_path):
    with ShardWriter(str(tmp_path / "t"), SCHEMA, shard_bytes=1) as out:
        for k in range(3):
            out.write({"id": [f"a{k}", f"b{k}"]})
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [f"part-0000{k}.parquet" for k in range(3)]
    with ShardWriter(str(tmp_path / "empty"), SCHEMA) as out:
        pass
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["part-00000.parquet"]
