"""The data card: its numbers on small tables and on the demo DAG's, the stage's page and PNGs, and `dvc plots show`
rendering every data-card picture in a real headless browser (Debian's chromium)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from PIL import Image

from stages.data_card import read_params
from stages.lib import data_card as card
from stages.lib.errors import StageError
from stages.lib.intervals import wilson
from tests.conftest import ROOT
from tests.helpers.demo_dag import DEMO
from tests.helpers.stage_runner import run_stage, scratch_project


def verdicts(rows):
    return pd.DataFrame(rows, columns=["id", "kept", "reason"])


def test_each_reject_is_counted_once_at_the_stage_that_decided_it():
    images = verdicts([("a", True, ""), ("b", True, ""), ("c", True, ""), ("d", True, ""), ("e", False, "duplicate")])
    quality = verdicts([("a", True, ""), ("b", False, "dark"), ("c", True, ""), ("d", True, "")])
    masks = verdicts([("a", True, ""), ("b", False, "dark"), ("c", False, "eyes_small"), ("d", True, "")])
    emotion = verdicts([("a", True, ""), ("d", False, "other_emotion")])
    mouth = verdicts([("a", False, "empty_mouth_region")])
    chain = {"ingest": images, "filter_quality": quality, "filter_masks": masks, "filter_emotion": emotion}
    rows = {r["stage"]: r for r in card.funnel(chain, {"mouth": mouth, "eyes": verdicts([("a", True, "")])})}
    assert rows["filter_masks"] == {"stage": "filter_masks", "input": 4, "kept": 2, "rejected": 2, "upstream": 1}
    assert rows["extract_rois:eyes"]["rejected"] == 0 and rows["extract_rois:mouth"]["upstream"] == 0
    assert all(r["kept"] + r["rejected"] == r["input"] for r in rows.values())
    got = [(r["stage"], r["reason"], r["ids"]) for r in card.reasons(chain, {"mouth": mouth})]
    assert got == [
        ("ingest", "duplicate", ["e"]),
        ("filter_quality", "dark", ["b"]),  # not again under filter_masks, which only passed it on
        ("filter_masks", "eyes_small", ["c"]),
        ("filter_emotion", "other_emotion", ["d"]),
        ("extract_rois:mouth", "empty_mouth_region", ["a"]),
    ]


def test_leakage_counts_test_images_whose_group_has_a_train_image():
    images = pd.DataFrame(
        {
            "id": list("abcdefg"),
            "split": ["train", "test", "test", "test", "train", "test", "test"],
            "group": ["p1", "p1", "p1", "p2", "p3", "p3", "p4"],
        }
    )
    got = card.leakage(images)
    assert (got["n_test"], got["leaked"], got["groups_both"]) == (5, 3, 2)
    assert got["rate"] == 0.6 and got["ci"] == wilson(3, 5)
    assert card.leakage(images.assign(group=images.id))["leaked"] == 0
    # Wilson's published values: 1 of 10 is [0.018, 0.404]; 0 of n reaches z^2 / (n + z^2), not 0 as a bootstrap says
    assert [round(v, 3) for v in wilson(1, 10)] == [0.018, 0.404]
    assert wilson(0, 294)[1] == pytest.approx(1.96**2 / (294 + 1.96**2))


def test_on_the_demo_tables_leakage_follows_the_groups(demo_project):
    images = pd.read_parquet(demo_project / "data" / "images", columns=["id", "split", "group", "label", "kept"])
    kept = images[images.kept]
    assert (kept.group == kept.id).all()  # split_by: id
    assert card.leakage(kept)["leaked"] == 0
    # one group per label: every label has train and test images, so every test image leaks
    by_label = card.leakage(kept.assign(group=kept.label))
    assert by_label["leaked"] == by_label["n_test"] == (kept.split == "test").sum() > 100
    assert by_label["groups_both"] == kept.label.nunique()


def crosstab_matches(table, frame, row, column):
    return all(v == ((frame[row] == r) & (frame[column] == c)).sum() for r, cs in table.items() for c, v in cs.items())


def test_crosstab_on_the_demo_manifest_has_every_split_in_order(demo_project):
    mouth = pd.read_parquet(demo_project / "data" / "rois" / "mouth.parquet", columns=["domain", "split", "kept"])
    table = card.crosstab(mouth[mouth.kept], "domain", "split")
    assert list(table) == ["A", "B"] and all(list(c) == ["train", "test"] for c in table.values())
    assert crosstab_matches(table, mouth[mouth.kept], "domain", "split")
    assert card.plot_name("extract_rois:mouth", "eyes_small+lips_small") == (
        "reject-extract_rois-mouth-eyes_small-lips_small.png"
    )


@pytest.fixture(scope="module")
def card_project(demo_project, tmp_path_factory):
    """The demo DAG's tables (linked, read-only) and metrics (copied) in a project of its own, data_card run there."""
    project = scratch_project(tmp_path_factory.mktemp("card") / "p", DEMO)
    (project / "data").mkdir()
    for name in ("images", "parsed", "filtered", "rois"):
        (project / "data" / name).symlink_to(demo_project / "data" / name)
    shutil.copytree(demo_project / "metrics", project / "metrics")
    run_stage(project, "data_card")
    return project


def test_the_page_agrees_with_each_stages_own_metrics(card_project):
    text = (card_project / "reports" / "data_card.md").read_text()
    metrics = {s: json.loads((card_project / "metrics" / f"{s}.json").read_text()) for s in ("filter_masks", "ingest")}
    masks = metrics["filter_masks"]
    assert f"| filter_masks | {masks['input']} | {masks['kept']} | {masks['rejected']} | 0 |" in text
    assert f"| ingest | {metrics['ingest']['rows']} | {metrics['ingest']['kept']} |" in text
    for reason, n in masks["by_reason"].items():
        assert f"| filter_masks | `{reason}` | {n} |" in text
    assert "**NO**" not in text
    grey = json.loads((card_project / "metrics" / "filter_quality.json").read_text())["issues"]["grayscale"]
    assert re.search(rf"\| grayscale \| report \| {grey['found']} \| 0 \| \d+ \|", text)
    rois = json.loads((card_project / "metrics" / "extract_rois.json").read_text())["rois"]["mouth"]["counts"]
    assert f"| mouth | A (neutral) | {rois['A']['train']} | {rois['A']['test']} |" in text
    assert re.search(r"\| curated \(filter_emotion kept\) \| \d+ \| 0 \| 0\.000 \[0\.000, 0\.0\d\d\] \| 0 \|", text)


def test_every_linked_png_exists_and_each_reason_but_ingests_has_a_strip(card_project):
    plots = card_project / "plots" / "data_card"
    text = (card_project / "reports" / "data_card.md").read_text()
    linked = re.findall(r"\]\(\.\./plots/data_card/([^)]+)\)", text)
    assert sorted(linked) == sorted(os.listdir(plots)) and {"funnel.png", "class_balance.png"} <= set(linked)
    emotion = pd.read_parquet(card_project / "data" / "filtered" / "filter_emotion.parquet")
    for reason in emotion.reason[~emotion.kept].unique():
        assert card.plot_name("filter_emotion", reason) in linked
    ingest = json.loads((card_project / "metrics" / "ingest.json").read_text())["rejected_by_reason"]
    assert ingest and all(f"| ingest | `{reason}` | {n} |" in text for reason, n in ingest.items())
    assert not any(name.startswith("reject-ingest") for name in linked)


def test_rerun_is_byte_identical_and_a_bad_param_is_named(card_project):
    outputs = [card_project / "reports" / "data_card.md"] + sorted((card_project / "plots" / "data_card").iterdir())
    before = [p.read_bytes() for p in outputs]
    run_stage(card_project, "data_card")
    assert [p.read_bytes() for p in outputs] == before
    params = yaml.safe_load((card_project / "params.yaml").read_text())
    for key, value, says in (
        ("thumbs_per_reason", -1, "data_card.thumbs_per_reason=-1 must be an integer in [0, 32]"),
        ("thumbs_per_reson", 6, "unknown key data_card.thumbs_per_reson; did you mean data_card.thumbs_per_reason?"),
    ):
        with pytest.raises(StageError) as err:
            read_params({**params, "data_card": {**params["data_card"], key: value}})
        assert str(err.value) == f"params: {says}"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is missing (.ci/run installs it: apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium): cannot open the dvc plots page")
    return found


# Run at the page's load event: every <img> says whether it decoded, and at what size, so --dump-dom shows it.
PROBE = """<script>window.addEventListener("load", function () {
  for (const img of document.images) {
    img.setAttribute("data-loaded", img.complete && img.naturalWidth > 0);
    img.setAttribute("data-size", img.naturalWidth + "x" + img.naturalHeight);
  }
  document.body.setAttribute("data-probed", "yes");
});</script>"""


def test_dvc_plots_show_renders_every_data_card_picture(card_project, tmp_path):
    browser = chromium()
    shutil.copy(ROOT / "dvc.yaml", card_project / "dvc.yaml")
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=card_project, env=env, check=True)
    out = tmp_path / "dvc_plots"
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], cwd=card_project, env=env, capture_output=True
    )
    assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    page = out / "probed.html"
    page.write_text((out / "index.html").read_text().replace("</head>", PROBE + "</head>", 1))
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
    dom = subprocess.run(argv + [page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert 'data-probed="yes"' in dom, dom[-2000:]
    img = r'<img src="static/workspace_plots_data_card_([^"]+)" data-loaded="(\w+)" data-size="(\w+)">'
    found = re.findall(img, dom)
    assert found and all(loaded == "true" for _, loaded, _ in found), found
    plots = card_project / "plots" / "data_card"
    sizes = {p.name: "{}x{}".format(*Image.open(p).size) for p in plots.iterdir()}
    assert {name: size for name, _, size in found} == sizes  # one <img> or more per PNG, each at the PNG's size
