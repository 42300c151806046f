"""filter_quality: CleanVision's issues on the demo (the session's demo DAG) and on shared photos with defects put in;
filter_masks passes its rejects on; params are one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.demo import demo_sample
from stages.filter_quality import read_params
from stages.lib import params as P
from stages.lib.codec import decode_image
from stages.lib.errors import StageError
from stages.lib.image_issues import DUPLICATES, ISSUES, TableImages, find_issues, flag_column, set_column
from stages.lib.tables import ROW_GROUP_ROWS, read_frame
from tests.helpers.demo_dag import DEMO
from tests.helpers.quality_variants import VARIANTS, grey_and_colour, legend_rows, variant_folder
from tests.helpers.stage_runner import assert_contract, default_params, merge, run_stage, scratch_project


def quality(project) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / "filtered" / "filter_quality.parquet")


def kept_images(project) -> pd.DataFrame:
    images = read_frame(project / "data" / "images", ["id", "source_key", "width", "height", "channels", "kept"])
    return images[images.kept].drop(columns="kept")


def test_every_kept_image_is_checked_and_the_demo_greys_are_found(demo_project):
    fq, images = quality(demo_project), kept_images(demo_project)
    assert sorted(fq.id) == sorted(images.id) and fq.id.is_monotonic_increasing
    assert (fq.reason[~fq.kept] != "").all() and (fq.reason[fq.kept] == "").all()
    metrics = json.loads((demo_project / "metrics" / "filter_quality.json").read_text())
    assert metrics["kept"] + metrics["rejected"] == metrics["input"] == len(fq)
    # The demo draws a few single-channel faces; grayscale is reported, and nothing else is found on it.
    grey = set(images.id[images.channels == 1])
    assert len(grey) >= 10 and set(fq.id[fq.is_grayscale_issue]) == grey and fq.kept.all()
    assert {i: e["found"] for i, e in metrics["issues"].items() if i != "grayscale"} == dict.fromkeys(
        [i for i in ISSUES if i != "grayscale"], 0
    )
    for issue in ISSUES:
        assert (demo_project / "plots" / "filter_quality" / f"{issue}.png").is_file()


def test_the_demos_duplicates_are_still_found(demo_project):
    """Ingest rejects each injected duplicate (the same bytes); the copy, drawn again, is CleanVision's exact
    duplicate of its kept original and the only duplicate among the demo's images."""
    truth = pd.read_parquet(demo_project / "data" / "demo_truth.parquet")
    images = read_frame(demo_project / "data" / "images", ["id", "kept", "reason"]).set_index("id")
    copies = truth[truth.defect == "duplicate"]
    assert len(copies) >= 1 and (images.reason[copies.id] == "duplicate").all()
    table = TableImages(str(demo_project / "data" / "images"))
    drawn = [demo_sample(int(key.split("/")[1]), DEMO["ingest"]["demo"]["side"]).image for key in copies.source_key]

    class WithCopies:  # the kept images, then the drawn copies
        def __len__(self):
            return len(table) + len(drawn)

        def __getitem__(self, i):
            return table[i] if i < len(table) else (Image.fromarray(drawn[i - len(table)]),)

    found = find_issues(WithCopies(), {"exact_duplicates": {}, "near_duplicates": {}})
    originals = [table.ids.index(i.split("-dup")[0]) for i in copies.id]
    assert found.sets["exact_duplicates"] == sorted([o, len(table) + k] for k, o in enumerate(originals))
    assert found.sets["near_duplicates"] == []


def test_the_table_is_decoded_one_row_group_at_a_time(demo_project):
    table = TableImages(str(demo_project / "data" / "images"))
    images = read_frame(demo_project / "data" / "images", ["id", "kept", "image"])
    rows = images[images.kept].reset_index(drop=True)
    assert table.ids == list(rows.id) and len(table) > ROW_GROUP_ROWS
    for i in (0, ROW_GROUP_ROWS - 1, ROW_GROUP_ROWS, len(table) - 1):
        np.testing.assert_array_equal(table.pixels(i), decode_image(rows.image[i]))
        assert len(table._images) <= ROW_GROUP_ROWS  # only the bytes of the row group read last


def test_rerun_is_byte_identical(demo_project):
    outputs = [
        demo_project / "data" / "filtered" / "filter_quality.parquet",
        demo_project / "metrics" / "filter_quality.json",
    ]
    outputs += sorted((demo_project / "plots" / "filter_quality").glob("*.png"))
    before = [p.read_bytes() for p in outputs]
    run_stage(demo_project, "filter_quality")
    assert [p.read_bytes() for p in outputs] == before


def test_filter_masks_rejects_what_filter_quality_rejects(demo_project, tmp_path, shared_data):
    """grayscale made a reject: filter_masks rejects those faces with it and decides every other face as before."""
    project = scratch_project(tmp_path / "p", dict(DEMO, filter_quality={"reject": ["grayscale"], "report": []}))
    (project / "data").mkdir()
    for table in ("images", "parsed"):
        (project / "data" / table).symlink_to(demo_project / "data" / table)
    run_stage(project, "filter_quality")
    run_stage(project, "filter_masks")
    fq = quality(project).set_index("id")
    masks = pd.read_parquet(project / "data" / "filtered" / "filter_masks.parquet").set_index("id")
    before = pd.read_parquet(demo_project / "data" / "filtered" / "filter_masks.parquet").set_index("id")
    grey = fq.index[fq.is_grayscale_issue]
    assert len(grey) >= 10 and list(fq.reason[~fq.kept].unique()) == ["grayscale"]
    assert (masks.reason[grey] == "grayscale").all() and not masks.kept[grey].any()
    others = masks.index.difference(grey)
    assert masks.loc[others, ["kept", "reason"]].equals(before.loc[others, ["kept", "reason"]])
    assert json.loads((project / "metrics" / "filter_masks.json").read_text())["filter_quality_rejected"] == len(grey)
    assert not (project / "plots" / "filter_masks" / "grayscale.png").exists()
    assert_contract(project, shared_data)


@pytest.fixture(scope="module")
def real(tmp_path_factory, shared_data):
    """24 shared photos (20 grey 350x350, 4 colour of other sizes) and one altered copy of each of 7 grey ones,
    ingested and checked with params.yaml's filter_quality."""
    grey, colour = grey_and_colour(legend_rows())
    folder = tmp_path_factory.mktemp("faces")
    made = variant_folder(folder, grey[:20] + colour[:4], {v: [grey[k][0]] for k, v in enumerate(VARIANTS)})
    project = scratch_project(folder / "p", {"ingest": {"source": "labelled_folder", "path": str(folder)}})
    run_stage(project, "ingest")
    run_stage(project, "filter_quality")
    images = kept_images(project)
    assert len(images) == 31  # every copy differs in bytes from its photo, so ingest keeps them all
    table = images.merge(quality(project), on="id").set_index("source_key")
    return table, made, json.loads((project / "metrics" / "filter_quality.json").read_text())


def test_put_in_defects_are_found_and_rejected(real):
    table, made, metrics = real
    by_variant = {variant: (copy, name) for copy, (variant, name) in made.items()}
    for variant in ("dark", "light", "flat", "wide"):
        copy, name = by_variant[variant]
        assert table.reason[copy] == VARIANTS[variant][0] and table.kept[name], variant
    copy, name = by_variant["blur"]  # blurry only reports (params.yaml): the copy scores lower than its photo
    assert table.is_blurry_issue[copy] and table.blurry_score[copy] < table.blurry_score[name]
    for variant in ("exact", "near"):  # of each pair the lower id is kept
        pair = table.loc[list(by_variant[variant])].sort_values("id")
        assert list(pair.reason) == ["", VARIANTS[variant][0]], variant
    originals = table.drop(index=list(made))
    assert originals.drop(index=[by_variant[v][1] for v in ("exact", "near", "blur")]).kept.all()


def test_counts_per_issue_on_real_photos(real):
    table, made, metrics = real
    found = {issue: entry["found"] for issue, entry in metrics["issues"].items()}
    assert found["grayscale"] == (table.channels == 1).sum() == 27
    assert found["odd_size"] == ((table.width != 350) | (table.height != 350)).sum() == 5
    # the flattened copy, and the brightened one (whose reason is light, the earlier issue)
    assert (found["dark"], found["light"], found["odd_aspect_ratio"], found["low_information"]) == (1, 1, 1, 2)
    # the exact pair; the near pairs: the JPEG, the blurred and the darkened copy with their photos
    assert (metrics["issues"]["exact_duplicates"]["sets"], metrics["issues"]["near_duplicates"]["sets"]) == (1, 3)
    assert metrics["by_reason"] == {
        "dark": 1, "light": 1, "low_information": 1, "odd_aspect_ratio": 1, "exact_duplicates": 1, "near_duplicates": 2
    }  # fmt: skip
    assert metrics["kept"] == 24 and metrics["params"]["dark"] == {"threshold": 0.32}  # CleanVision's default


def test_a_duplicate_set_keeps_its_lowest_id_not_rejected_otherwise(real):
    table, _, _ = real
    for issue in DUPLICATES:
        for _, members in table[table[flag_column(issue)]].groupby(set_column(issue)):
            earlier = [r for r in members.reason if r and ISSUES.index(r) < ISSUES.index(issue)]
            still = members[~members.reason.isin(earlier)].sort_values("id")
            assert list(still.reason) == [""] + [issue] * (len(still) - 1), members


@pytest.mark.parametrize(
    "block, message",
    [
        ({"reject": ["drak"]}, "filter_quality.reject names 'drak', not a CleanVision issue type; did you mean dark?"),
        ({"reject": ["dark"], "report": ["dark"]}, "'dark' is in both filter_quality.reject and filter_quality.report"),
        ({"report": "blurry"}, "filter_quality.report='blurry' must be a list"),
        ({"thresholds": {"dark": {"treshold": 0.2}}}, "thresholds.dark.treshold is not a CleanVision param of dark"),
        ({"thresholds": {"dark": {"threshold": 1.5}}}, "filter_quality.thresholds.dark.threshold=1.5 must be"),
        ({"thresholds": {"dark": 0.2}}, "filter_quality.thresholds.dark=0.2 must map CleanVision params"),
        ({"reject": [], "thresholds": {"dark": {"threshold": 0.2}}}, "thresholds.dark is set but the issue is not"),
        ({"report": ["near_duplicates"], "reject": []}, "near_duplicates needs exact_duplicates in filter_quality"),
        ({"sheet_mx": 3}, "unknown key filter_quality.sheet_mx; did you mean filter_quality.sheet_max?"),
    ],
)
def test_bad_params_are_one_line(monkeypatch, block, message):
    monkeypatch.setattr(P, "_READ", set())
    with pytest.raises(StageError) as err:
        read_params(merge(default_params(), {"filter_quality": block}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_thresholds_reach_cleanvision(monkeypatch):
    monkeypatch.setattr(P, "_READ", set())
    reject, overrides, _ = read_params(
        merge(
            default_params(),
            {"filter_quality": {"thresholds": {"dark": {"threshold": 0.5}, "near_duplicates": {"hash_size": 16}}}},
        )
    )
    assert overrides["dark"] == {"threshold": 0.5} and overrides["near_duplicates"] == {"hash_size": 16}
    assert overrides["blurry"] == {} and "blurry" not in reject


def test_a_bad_param_stops_the_stage_with_one_line(tmp_path):
    project = scratch_project(tmp_path / "p", {"filter_quality": {"reject": ["blury"]}})
    proc = run_stage(project, "filter_quality", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: params: filter_quality.reject names 'blury', not a CleanVision issue type; did you mean blurry?"
    ]
