"""Shared by tests/test_parse_visibility.py and bench/visibility.py: FaceMesh landmarks found once per image, the map
drawn with and without the visibility check, and the share of faces filter_masks' rule would reject.

The rule's limits are read from params.yaml's filter_masks block (read only), so the rates are the pipeline's.
"""

from collections import defaultdict

import numpy as np
import yaml

from stages.lib.labels import N_PARSE_CLASSES
from stages.lib.masks import visibility_reasons
from stages.lib.parsing.labelmap import class_counts
from tests.conftest import ROOT

HIDDEN_DEFECTS = ("mouth_occluded", "eyes_occluded", "sunglasses", "eyes_closed")


def mask_rule():
    """(min_px, ref_size) of params.yaml's filter_masks block."""
    with open(ROOT / "params.yaml") as f:
        block = yaml.safe_load(f)["filter_masks"]
    return block["min_px"], block["ref_size"]


def find_landmarks(parser, images):
    """Normalised landmarks (or None) per image, as the parse stage finds them."""
    out = []
    for image in images:
        rgb, _ = parser.detection_input(image)
        out.append(parser.landmarks(rgb))
    return out


def rejected(parser, images, landmarks, visibility):
    """Bool per image: would filter_masks reject the map drawn with these visibility limits (None: landmarks only)?"""
    min_px, ref_size = mask_rule()
    saved, parser.visibility = parser.visibility, visibility
    try:
        found, counts = [], []
        for image, pts in zip(images, landmarks):
            label_map, _ = parser.draw(pts, image.shape[0], image.shape[1], image)
            found.append(label_map is not None)
            counts.append(class_counts(label_map) if label_map is not None else [0] * N_PARSE_CLASSES)
    finally:
        parser.visibility = saved
    kept, _, _, _ = visibility_reasons(np.array(found), np.array(counts, dtype=np.int64), min_px, ref_size)
    return ~kept


def rates_by_defect(defects, rejects) -> dict:
    """{defect: (share rejected, count)} over the demo samples' recorded defects."""
    groups = defaultdict(list)
    for defect, r in zip(defects, rejects):
        groups[defect].append(bool(r))
    return {d: (float(np.mean(v)), len(v)) for d, v in sorted(groups.items())}
