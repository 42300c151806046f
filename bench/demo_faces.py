"""Look at and measure the embedded demo faces: render speed, FaceMesh detection per defect, the judge's reading.

Run from the project root:
    python bench/demo_faces.py [--n 600] [--size 256] [--seed 0] [--sheet docs/demo_faces.png] [--sheet-n 40]
Prints
  - render time per image (one thread);
  - MediaPipe FaceMesh detection rate per defect, with the settings the parse stage uses
    (static images, one face, refined landmarks, confidence 0.5);
  - the judge's neutral-vs-happy accuracy on clean, correctly labelled faces (p[happy] vs p[neutral] on the
    face crop from the ground-truth box), and its mean probabilities per drawn emotion.
The contact sheet shows the first --sheet-n samples captioned with label (* = noisy label) and defect.
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stages.demo import render_demo  # noqa: E402
from stages.lib.contact_sheet import render_sheet  # noqa: E402
from stages.lib.labels import FER_ORDER  # noqa: E402
from tests.helpers.judge_reference import HAPPY, NEUTRAL  # noqa: E402


def caption(sample) -> str:
    """The sample's label, starred when it is noise, and its defect unless none."""
    text = sample.label[:3] + ("*" if sample.truth["label_noise"] else "")
    return text if sample.truth["defect"] == "none" else f"{text} {sample.truth['defect'][:9]}"


def save_sheet(path, samples):
    """Write the samples' contact sheet as a dithered 256-colour PNG: the sensor noise makes a true-colour one too big
    for the README, and without dithering (or k-means palette refinement) skin gets blotchy."""
    rgb = render_sheet([s.image for s in samples], [caption(s) for s in samples], cols=10, thumb=120)
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, kmeans=5)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, format="PNG", optimize=True)


def facemesh_found(images) -> np.ndarray:
    """One bool per image: did FaceMesh (the parse stage's settings) return landmarks?"""
    import mediapipe as mp

    found = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
    ) as mesh:
        for img in images:
            rgb = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            found.append(mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks is not None)
    return np.array(found, bool)


def judge_demo(samples):
    """(probs (N, 7), true emotions) for the samples' ground-truth face crops."""
    from stages.lib.boxes import face_crop
    from stages.lib.judge import judge_probs, load_judge

    model = load_judge()
    crops = [face_crop(s.image, s.truth["face_bbox"]) for s in samples]
    return judge_probs(model, crops), [s.truth["true_emotion"] for s in samples]


def is_clean(sample) -> bool:
    return sample.truth["defect"] in ("none", "eyes_closed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", default="")
    ap.add_argument("--sheet-n", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    wall, cpu = time.perf_counter(), time.process_time()
    samples = list(render_demo(args.n, args.size, args.seed))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"render: {args.n} images of {args.size}px in {cpu:.1f} s CPU, {wall:.1f} s wall "
        f"({1000 * cpu / max(args.n, 1):.1f} ms CPU each; wall time grows when the cores are shared)"
    )
    if args.sheet:
        save_sheet(args.sheet, samples[: args.sheet_n])
        print(f"contact sheet: {args.sheet} ({os.path.getsize(args.sheet) // 1024} KB)")

    found = facemesh_found([s.image for s in samples])
    print("FaceMesh detection rate per defect:")
    by_defect = collections.defaultdict(list)
    for s, f in zip(samples, found):
        by_defect[s.truth["defect"]].append(f)
    for defect, hits in sorted(by_defect.items()):
        print(f"  {defect:15s} {np.mean(hits):.3f}  ({sum(hits)}/{len(hits)})")
    clean = [f for s, f in zip(samples, found) if is_clean(s)]
    print(f"  clean (none + eyes_closed, label noise included): {np.mean(clean):.3f} ({sum(clean)}/{len(clean)})")

    judged = [s for s in samples if s.truth["defect"] == "none"]
    probs, truth = judge_demo(judged)
    for emotion in ("neutral", "happy", "sad", "surprise"):
        rows = probs[[t == emotion for t in truth]]
        if len(rows):
            mean = " ".join(f"{k[:3]}={v:.2f}" for k, v in zip(FER_ORDER, rows.mean(0)))
            print(f"judge on drawn {emotion:8s} (n={len(rows)}): {mean}")
    pairs = [
        (t, p) for s, t, p in zip(judged, truth, probs) if t in ("neutral", "happy") and not s.truth["label_noise"]
    ]
    right = [(p[HAPPY] > p[NEUTRAL]) == (t == "happy") for t, p in pairs]
    print(
        f"judge neutral-vs-happy accuracy, clean correctly labelled faces: {np.mean(right):.3f} "
        f"({sum(right)}/{len(right)})"
    )


if __name__ == "__main__":
    main()
