"""How well the judge reads real photos, and how closely the torch port follows fer's own TFLite model.

Run from the project root:
    python bench/judge.py [--limit N] [--data ../shared/data/facial_expressions]
Prints, on the neutral and happy photos of muxspace/facial_expressions (labels mapped by canonical_emotion):
  - neutral-vs-happy accuracy (the 7-way output restricted to those two probabilities) for the whole 350x350 image,
    central crops, and fer's own recipe (OpenCV Haar face box + 10 px margin);
  - top-1 agreement and max probability difference against emotion_model_quantized.tflite, when ai-edge-litert is
    installed.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages.lib.boxes import face_crop  # noqa: E402
from stages.lib.errors import run_stage  # noqa: E402
from stages.lib.judge import judge_probs, load_judge  # noqa: E402
from tests.helpers.judge_reference import DATA, load_neutral_happy, neutral_happy_accuracy, tflite_probs  # noqa: E402

CENTRAL_FRACTIONS = (0.9, 0.8, 0.7, 0.6)


def central_crop(grey, fraction):
    """The centred square covering `fraction` of the shorter side."""
    h, w = grey.shape
    side = max(1, int(round(min(h, w) * fraction)))
    return face_crop(grey, ((w - side) / 2, (h - side) / 2, side, side), margin=0.0)


def haar_crop(grey, detector):
    """fer's recipe: the largest OpenCV Haar face box, grown by 10 px each side; None when no face is found."""
    boxes = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    if len(boxes) == 0:
        return None
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
    return face_crop(grey, (x, y, w, h), margin=10 / max(w, h))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--limit", type=int, default=0, help="balanced random sample of this many photos (0 = all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_judge()
    images, labels = load_neutral_happy(args.data, args.limit or None)
    print(f"{len(images)} photos: {int(np.sum(labels == 'neutral'))} neutral, {int(np.sum(labels == 'happy'))} happy")

    t0 = time.perf_counter()
    probs = judge_probs(model, images)
    elapsed = time.perf_counter() - t0
    print(f"judge on cpu, 1 thread: {len(images) / elapsed:.0f} faces/s (incl. resize)")
    print(f"accuracy, whole image          : {neutral_happy_accuracy(probs, labels):.3f}")
    for fraction in CENTRAL_FRACTIONS:
        acc = neutral_happy_accuracy(judge_probs(model, [central_crop(g, fraction) for g in images]), labels)
        print(f"accuracy, central crop {fraction:.1f}     : {acc:.3f}")

    detector = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    crops = [haar_crop(g, detector) for g in images]
    found = np.array([c is not None for c in crops])
    haar = judge_probs(model, [c for c in crops if c is not None])
    print(
        f"accuracy, Haar face box (fer)  : {neutral_happy_accuracy(haar, labels[found]):.3f} "
        f"on the {found.sum()} photos with a face found "
        f"(whole image on the same: {neutral_happy_accuracy(probs[found], labels[found]):.3f})"
    )

    reference = tflite_probs(images)
    if reference is None:
        print("tflite: ai-edge-litert not installed; skipped the comparison")
    else:
        diff = np.abs(probs - reference)
        agree = np.mean(probs.argmax(1) == reference.argmax(1))
        print(
            f"vs fer's quantised tflite      : top-1 agreement {agree:.4f}, max |prob diff| {diff.max():.4f}, "
            f"mean {diff.mean():.5f}"
        )


if __name__ == "__main__":
    run_stage(main)
