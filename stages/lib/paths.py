"""Where the stages read and write: stages/paths.yaml, which dvc.yaml also reads (`vars:`), so a path is named once.

    from stages.lib import paths
    paths.IMAGES                      # data/images
    paths.roi_manifest("mouth")       # data/rois/mouth.parquet
    paths.metrics_file("ingest")      # metrics/ingest.json
Paths are relative to the project root, the directory DVC runs the stages in.
"""

import os

import yaml

with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "paths.yaml")) as _f:
    PATHS = yaml.safe_load(_f)["paths"]

IMAGES = PATHS["images"]
DEMO_TRUTH = PATHS["demo_truth"]
PARSED = PATHS["parsed"]
FILTER_QUALITY = PATHS["filter_quality"]
FILTER_MASKS = PATHS["filter_masks"]
CURATOR_OOF = PATHS["curator_oof"]
CURATOR = PATHS["curator"]
FILTER_EMOTION = PATHS["filter_emotion"]
ROIS = PATHS["rois"]
JUDGE = PATHS["judge"]


def roi_manifest(roi: str) -> str:
    return os.path.join(ROIS, f"{roi}.parquet")


def generator_dir(roi: str) -> str:
    return os.path.join(PATHS["generators"], roi)


def generator_file(roi: str) -> str:
    return os.path.join(generator_dir(roi), "generator_AB.pt")


def metrics_file(name: str) -> str:
    return os.path.join(PATHS["metrics"], f"{name}.json")


def plots_dir(stage: str) -> str:
    return os.path.join(PATHS["plots"], stage)


def eval_dir(edit: str) -> str:
    return os.path.join(PATHS["eval"], edit)


def report_file(name: str) -> str:
    return os.path.join(PATHS["reports"], f"{name}.md")


def live_dir(*parts: str) -> str:
    return os.path.join(PATHS["dvclive"], *parts)
