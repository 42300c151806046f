"""ingest.split_by: identity and near-duplicate groups on real photos (stages/lib/groups.py, ingest_groups.py)."""

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from stages.lib.codec import decode_image, to_grey
from stages.lib.face_signature import perceptual_hash
from stages.lib.groups import assign_groups, split_from_group
from stages.lib.image_table import split_from_id
from tests.helpers.stage_runner import assert_contract, run_stage, scratch_project

PEOPLE = ("Tony_Blair", "Hugo_Chavez")
OTHERS = ("Aaron_Guiel_0001.jpg", "Adam_Ant_0001.jpg", "Adam_Sandler_0001.jpg")


def photos(shared_data):
    return shared_data / "facial_expressions" / "images"


def reencoded(data: bytes, side: int) -> bytes:
    """Another file of the same photo: resized and saved again at JPEG quality 70."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).resize((side, side), Image.LANCZOS).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


@pytest.fixture(scope="module")
def grouped(tmp_path_factory, shared_data):
    """Four photos of each of two people, three other people, a near-copy of one of those, and a rejected file.
    Module-scoped: ingest with dlib's grouping costs seconds; the one test that changes the folder runs last."""
    tmp_path = tmp_path_factory.mktemp("grouped")
    folder = tmp_path / "faces"
    (folder / "images").mkdir(parents=True)
    names = [n for p in PEOPLE for n in sorted(f.name for f in photos(shared_data).glob(f"{p}_0*.jpg"))[:4]]
    names += list(OTHERS)
    for name in names:
        (folder / "images" / name).write_bytes((photos(shared_data) / name).read_bytes())
    (folder / "images" / "copy.jpg").write_bytes(reencoded((photos(shared_data) / OTHERS[0]).read_bytes(), 300))
    (folder / "images" / "tiny.jpg").write_bytes(reencoded((photos(shared_data) / OTHERS[1]).read_bytes(), 30))
    rows = [f"{n},neutral" for n in names] + ["copy.jpg,happy", "tiny.jpg,happy"]
    (folder / "legend.csv").write_text("image,emotion\n" + "\n".join(rows) + "\n")
    project = scratch_project(
        tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(folder), "split_by": "group"}}
    )
    run_stage(project, "ingest")
    return project, pd.read_parquet(project / "data" / "images").set_index("source_key")


def test_one_persons_photos_and_a_near_copy_share_a_group_and_its_split(grouped, shared_data):
    project, df = grouped
    person = df.index.str.rsplit("_", n=1).str[0]
    for name in PEOPLE:
        rows = df[person == name]
        assert len(rows) == 4 and rows.group.nunique() == 1 and rows.split.nunique() == 1, rows[["group", "split"]]
        assert rows.group.iloc[0] == rows.id.min()  # a group is named by its lowest id
    assert df.group[person == PEOPLE[0]].iloc[0] != df.group[person == PEOPLE[1]].iloc[0]
    assert df.group["copy.jpg"] == df.group[OTHERS[0]] and df.split["copy.jpg"] == df.split[OTHERS[0]]
    assert df.loc[list(OTHERS), "group"].nunique() == 3
    kept = df[df.kept]
    assert (kept.split == [split_from_group(g, 0.4) for g in kept.group]).all()
    # a rejected row is a group of its own, its split drawn from that
    assert df.reason["tiny.jpg"] == "too_small" and df.group["tiny.jpg"] == df.id["tiny.jpg"]
    assert_contract(project, shared_data)
    first = [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))]
    run_stage(project, "ingest")
    assert [p.read_bytes() for p in sorted((project / "data" / "images").glob("*.parquet"))] == first


def test_split_by_id_draws_each_split_from_the_id_as_before(tmp_path, shared_data):
    folder = shared_data / "facial_expressions"
    project = scratch_project(tmp_path / "p", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    run_stage(project, "ingest")
    df = pd.read_parquet(project / "data" / "images")
    assert (df.group == df.id).all() and (df.split == [split_from_id(i, 0.4) for i in df.id]).all()
    # every (id, split) of the 2,072 rows as the ingest stage drew them before split_by existed
    pairs = "\n".join(f"{i} {s}" for i, s in sorted(zip(df.id, df.split)))
    assert hashlib.sha256(pairs.encode()).hexdigest()[:16] == "4e56e45140c8541a"


def test_hash_joins_copies_without_a_face_and_groups_ignore_order(shared_data):
    names = sorted(f.name for f in photos(shared_data).glob("A*.jpg"))[:6]
    greys = [to_grey(decode_image((photos(shared_data) / n).read_bytes())) for n in names]
    small = np.asarray(Image.fromarray(greys[0]).resize((210, 210), Image.LANCZOS))
    hashes = [perceptual_hash(g) for g in greys] + [perceptual_hash(small)]
    ids = [f"{k:02d}" for k in range(len(hashes))]
    groups = assign_groups(ids, [None] * len(ids), hashes, 0.55)  # no face found in any: the hash alone decides
    assert groups["06"] == groups["00"] == "00"
    assert len({groups[i] for i in ids[:6]}) == 6
    order = [3, 6, 0, 5, 1, 4, 2]
    assert assign_groups([ids[k] for k in order], [None] * 7, [hashes[k] for k in order], 0.55) == groups


def test_names_from_file_names_join_groups_the_embeddings_keep_apart(shared_data):
    names = sorted(f.name for f in photos(shared_data).glob("A*.jpg"))[:6]
    hashes = [perceptual_hash(to_grey(decode_image((photos(shared_data) / n).read_bytes()))) for n in names]
    ids = [f"{k:02d}" for k in range(6)]
    # two images say they show "x", one says "x" and "y" (two copies, two names), one "y"; the rest none
    given = [["x"], [], ["x"], ["x", "y"], [], ["y"]]
    groups = assign_groups(ids, [None] * 6, hashes, 0.55, given)
    assert groups == {"00": "00", "01": "01", "02": "00", "03": "00", "04": "04", "05": "00"}
    order = [5, 2, 0, 4, 1, 3]
    shuffled = assign_groups([ids[k] for k in order], [None] * 6, [hashes[k] for k in order], 0.55,
                             [given[k] for k in order])  # fmt: skip
    assert shuffled == groups


def test_group_pattern_joins_what_the_file_names_join(grouped, shared_data):
    project, before = grouped
    folder = project.parent / "faces"
    # a fifth photo of Tony Blair filed under Adam Ant's name: its embedding joins Blair, its name Adam Ant
    blair = sorted(f.name for f in photos(shared_data).glob(f"{PEOPLE[0]}_0*.jpg"))[4]
    (folder / "images" / "Adam_Ant_0002.jpg").write_bytes((photos(shared_data) / blair).read_bytes())
    with open(folder / "legend.csv", "a") as f:
        f.write("Adam_Ant_0002.jpg,neutral\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["group_pattern"] = r"^(.+)_\d+\.jpe?g$"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage(project, "ingest")
    df = pd.read_parquet(project / "data" / "images").set_index("source_key")
    blairs = df.index.str.startswith(PEOPLE[0])
    assert (df.group[blairs] == df.group["Adam_Ant_0001.jpg"]).all() and df.group["Adam_Ant_0002.jpg"] == df.group[
        blairs
    ].iloc[0]
    assert before.group["Adam_Ant_0001.jpg"] != before.group[before.index.str.startswith(PEOPLE[0])].iloc[0]
    assert df.group["Aaron_Guiel_0001.jpg"] != df.group["Adam_Ant_0001.jpg"]
    assert df.group["copy.jpg"] == df.group[OTHERS[0]]  # no name: the near-copy still joins by its hash


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"split_by": "person"}, "ingest.split_by"),
        ({"split_by": "group", "group_pattern": "(unclosed"}, "ingest.group_pattern"),
        ({"split_by": "group", "group_distance": 0}, "ingest.group_distance"),
        ({"group_distance": "far"}, "ingest.group_distance"),
    ],
)
def test_bad_grouping_params_are_one_line_errors(tmp_path, overrides, needle):
    project = scratch_project(tmp_path / "p", {"ingest": overrides})
    proc = run_stage(project, "ingest", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
