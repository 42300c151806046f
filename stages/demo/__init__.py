"""The embedded demo dataset: procedurally drawn faces with recorded ground truth and injected defects.

A fresh clone runs the whole pipeline offline on these. The faces are painted with numpy and OpenCV (shaded skin,
hair, ears, neck, eyes with lids/iris/pupil, nose with nostrils, two-tone lips) so that MediaPipe FaceMesh finds
them and the mini-Xception judge reads their expression. Each sample also carries the truth (drawn emotion, label
noise, defect, face box) that tests use to score the filters; the pipeline itself never reads the truth.

Use:
    from stages.demo import render_demo, DEFECTS
    for sample in render_demo(n=600, size=256, seed=0):
        sample.image, sample.label, sample.truth
See the faces: `python bench/demo_faces.py --sheet docs/demo_faces.png` (also measures speed, FaceMesh, judge).

Determinism: sample i depends only on (i, size, seed), never on n, so `render_demo(100)` is the first 100 of
`render_demo(600)`. Emotions, label noise and defects are dealt from a shuffled deck per block of `BLOCK` samples,
so the rates are exact on whole blocks and close on any prefix.

Modules: plan (what each sample is), render (the stream), portrait (a whole face photo: placement, body, head),
features (eyes, brows, nose, mouth, cheeks), defects (occluders, sunglasses), look (the random person and
expression), canvas (the face-unit canvas everything is painted on), photo (backdrop, non-faces, camera finish).
"""

from .plan import BLOCK, DEFECTS, demo_plan
from .render import DemoSample, demo_sample, render_demo

__all__ = ["BLOCK", "DEFECTS", "DemoSample", "demo_plan", "demo_sample", "render_demo"]
