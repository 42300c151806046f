"""Pseudo-labels for unlabelled images (`ingest.source: image_folder`): the pretrained judge's top class.

Ingest runs before the parser, so there is no face box yet: the judge reads the whole image as its face square
(boxes.face_box without a box, then boxes.face_crop, as filter_emotion does for a face the parser missed). On the
shared photos, which are face crops, the judge reads the whole image about as well as fer's own Haar face box
(bench/README.md, `bench/judge.py`); a folder of wide shots with small faces would be read much worse.

    labeller = PseudoLabeller(enabled=True, device="cpu")
    work = record_worker(cfg, labeller.face_square)   # each kept row carries its 64x64 grey square as `face`
    labeller.label(rows)                              # label = the judge's class, label_prob = its probability
"""

import cv2
import numpy as np

from .boxes import face_box, face_crop
from .codec import to_grey
from .labels import FER_ORDER


class PseudoLabeller:
    """Labels a batch of ingested rows at a time, so memory stays one chunk of 64x64 squares. Disabled (every
    source but image_folder), it loads no judge and touches no row."""

    def __init__(self, enabled: bool, device=None):
        self.enabled, self.judge = enabled, None
        if enabled:
            from .judge import INPUT_SIZE, load_judge
            from .params import pin_torch_threads

            pin_torch_threads()
            self.judge, self.side = load_judge(device=device or "cpu"), INPUT_SIZE

    def face_square(self, pixels: np.ndarray) -> np.ndarray:
        """The judge's grey input for a decoded image, already at its input side (the resize it would do itself)."""
        grey = to_grey(pixels)
        return cv2.resize(face_crop(grey, face_box(grey, None)), (self.side, self.side))

    def label(self, rows: list):
        """Fill `label` and `label_prob` of the kept rows that carry a `face`, and drop the square from every row."""
        if not self.enabled:
            return
        from .judge import STREAM_BATCH, judge_probs

        todo = [row for row in rows if row.get("face") is not None]
        probs = judge_probs(self.judge, [row.pop("face") for row in todo], batch=STREAM_BATCH)
        for row, p in zip(todo, probs):
            top = int(np.argmax(p))
            row["label"], row["label_prob"] = FER_ORDER[top], float(p[top])
