"""Strict params: a misspelled or unknown key, a bad number, or keys that do not fit together is one line naming
the key, at the first stage that reads it, never silently ignored."""

import pytest

from stages import evaluate, extract_rois, filter_emotion, filter_masks, filter_quality, ingest, train_curator
from stages.lib import params as P
from stages.lib.cyclegan import read_config
from stages.lib.errors import StageError
from stages.lib.parsing import read_params as parse_params
from tests.helpers.stage_runner import default_params, merge

READERS = {
    "ingest": ingest.read_params,
    "parse": parse_params,
    "filter_quality": filter_quality.read_params,
    "filter_masks": filter_masks.read_params,
    "curator": train_curator.read_params,
    "filter_emotion": filter_emotion.read_params,
    "extract_rois": extract_rois.read_params,
    "train": lambda p: read_config(p, "mouth"),
    "evaluate": evaluate.read_params,
}


@pytest.fixture(autouse=True)
def fresh_reads(monkeypatch):
    # Each case starts with no key read, as a stage process does.
    monkeypatch.setattr(P, "_READ", set())


@pytest.mark.parametrize("block", sorted(READERS))
def test_the_committed_params_are_all_known(block):
    READERS[block](default_params())


@pytest.mark.parametrize(
    "block, overrides, message",
    [
        ("parse", {"parse": {"visibilty": False}}, "unknown key parse.visibilty; did you mean parse.visibility?"),
        ("train", {"train": {"lrr": 0.1}}, "unknown key train.lrr; did you mean train.lr?"),
        ("ingest", {"ingest": {"min_sise": 20}}, "unknown key ingest.min_sise; did you mean ingest.min_size?"),
        (
            "filter_masks",
            {"filter_masks": {"sheet_mx": 3}},
            "unknown key filter_masks.sheet_mx; did you mean filter_masks.sheet_max?",
        ),
        ("train", {"train": {"epochs": {"face": 2, "moth": 3}}}, "unknown key train.epochs.moth"),
        ("evaluate", {"evalute": {"seed": 1}}, "unknown block 'evalute'; did you mean evaluate?"),
        ("train", {"train": {"lr": 0}}, "train.lr=0 must be a number"),
        ("train", {"train": {"lr": "fast"}}, "train.lr='fast' is text, not a number"),
        ("extract_rois", {"rois": {"side": {"mouth": 33}}}, "rois.side.mouth=33 must be divisible by 2"),
    ],
)
def test_bad_params_are_one_line_naming_the_key(block, overrides, message):
    with pytest.raises(StageError) as err:
        READERS[block](merge(default_params(), overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_number_yaml_read_as_text_is_accepted():
    import yaml

    params = merge(default_params(), {"train": yaml.safe_load("lr: 1e-4")})
    assert params["train"]["lr"] == "1e-4"  # PyYAML: no dot, so a string
    assert read_config(params, "mouth").lr == pytest.approx(1e-4)
