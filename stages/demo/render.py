"""The demo stream: sample i drawn from its planned slot, a portrait or a non-face, a few of them grey."""

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from .photo import draw_non_face
from .plan import duplicate_source, planned_slot, slot_truth
from .portrait import draw_portrait

GREY_FRACTION = 0.05  # a few single-channel images, as real datasets mix them


@dataclass(frozen=True)
class DemoSample:
    image: np.ndarray  # uint8 HxWx3 RGB, or HxW grey for a few
    label: str  # the label given to the pipeline (may be noisy), canonical spelling
    truth: dict  # true_emotion (None for non-faces), label_noise, defect, face_bbox (x, y, w, h) or None,
    #                    duplicate_of (the index of the original, for duplicates; else None)


def render_demo(n: int = 600, size: int = 256, seed: int = 0) -> Iterator[DemoSample]:
    """Yield n demo samples of size x size pixels; the same (size, seed) always gives the same sample i."""
    if n < 0 or size < 32:
        raise ValueError(f"render_demo wants n >= 0 and size >= 32, got n={n}, size={size}")
    for i in range(n):
        yield demo_sample(i, size, seed)


def demo_sample(index: int, size: int = 256, seed: int = 0) -> DemoSample:
    """Sample `index` of the demo stream, rendered on its own."""
    slot = planned_slot(seed, index)
    rng = np.random.default_rng([seed, index, 202])
    if slot.defect == "duplicate":
        source = duplicate_source(seed, index)
        original = demo_sample(source, size, seed)
        truth = dict(original.truth, defect="duplicate", duplicate_of=source)
        return DemoSample(original.image.copy(), original.label, truth)
    if slot.defect == "non_face":
        image, box = draw_non_face(rng, size), None
    else:
        image, box = draw_portrait(rng, size, slot.emotion, slot.defect)
    if rng.random() < GREY_FRACTION:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return DemoSample(image, slot.label, dict(slot_truth(slot), face_bbox=box))
