"""The demo generator: determinism, defect and noise rates, and that FaceMesh and the judge read its faces.

Run: pytest tests/test_demo_faces.py   (about 10 s on one core; the judge test needs models/judge/mini_xception.pt)
"""

import collections
import os

import numpy as np
import pytest

from stages.demo import DEFECTS, DemoSample, demo_plan, demo_sample, render_demo
from stages.lib.codec import content_id, encode_png
from stages.lib.labels import EMOTIONS
from tests.helpers.judge_reference import HAPPY, NEUTRAL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JUDGE_WEIGHTS = os.path.join(ROOT, "models", "judge", "mini_xception.pt")
SIZE = 128  # small, fast images; FaceMesh and the judge work at this size too
N_SAMPLE = 120
# protobuf's deprecation notice, raised inside mediapipe
pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")


@pytest.fixture(scope="module")
def sample():
    return list(render_demo(N_SAMPLE, SIZE, seed=0))


@pytest.fixture(scope="module")
def facemesh():
    mp = pytest.importorskip("mediapipe")
    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
    )
    yield mesh
    mesh.close()


def finds_face(mesh, image) -> bool:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks is not None


def is_clean(s: DemoSample) -> bool:
    return s.truth["defect"] in ("none", "eyes_closed")


def test_same_seed_same_bytes_and_other_seed_differs():
    a = list(render_demo(6, 96, seed=3))
    b = list(render_demo(6, 96, seed=3))
    c = list(render_demo(6, 96, seed=4))
    assert [encode_png(s.image) for s in a] == [encode_png(s.image) for s in b]
    assert [(s.label, s.truth) for s in a] == [(s.label, s.truth) for s in b]
    assert all(not np.array_equal(x.image, y.image) for x, y in zip(a, c) if x.image.shape == y.image.shape)


def test_sample_i_does_not_depend_on_n(sample):
    short = list(render_demo(10, SIZE, seed=0))
    for s, t in zip(short, sample[:10]):
        assert np.array_equal(s.image, t.image) and s.label == t.label and s.truth == t.truth
    lone = demo_sample(57, SIZE, seed=0)
    assert np.array_equal(lone.image, sample[57].image) and lone.truth == sample[57].truth


def test_samples_have_the_promised_form(sample):
    for s in sample:
        assert s.image.dtype == np.uint8 and s.image.shape[:2] == (SIZE, SIZE)
        assert s.image.ndim == 2 or s.image.shape[2] == 3
        assert s.label in EMOTIONS and s.truth["defect"] in DEFECTS
        box = s.truth["face_bbox"]
        if s.truth["defect"] == "non_face":
            assert box is None and s.truth["true_emotion"] is None
        else:
            x, y, w, h = box
            assert all(isinstance(v, int) for v in box) and w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
    assert any(s.image.ndim == 2 for s in sample), "a few grey images are expected"
    assert sum(s.image.ndim == 2 for s in sample) < 0.15 * len(sample)


def test_plan_matches_what_is_drawn(sample):
    plan = demo_plan(N_SAMPLE, seed=0)
    for row, s in zip(plan, sample):
        assert row["label"] == s.label
        assert row == dict({k: v for k, v in s.truth.items() if k != "face_bbox"}, label=s.label)


def test_rates_on_600():
    plan = demo_plan(600, seed=0)
    defects = collections.Counter(r["defect"] for r in plan)
    rate = {d: defects[d] / 600 for d in DEFECTS}
    assert 0.70 <= rate["none"] <= 0.85
    assert 0.03 <= rate["mouth_occluded"] <= 0.05
    for d in ("eyes_occluded", "sunglasses", "eyes_closed", "too_small", "cut_off"):
        assert 0.02 <= rate[d] <= 0.04, d
    assert 0.01 <= rate["non_face"] <= 0.02
    assert 1 <= defects["duplicate"] <= 3
    emotions = collections.Counter(r["true_emotion"] for r in plan if r["defect"] != "non_face")
    faces = sum(emotions.values())
    for e in ("neutral", "happy"):
        assert 0.38 <= emotions[e] / faces <= 0.46, e
    assert emotions["sad"] > 0 and emotions["surprise"] > 0
    noisy = [r for r in plan if r["label_noise"]]
    assert 0.08 <= len(noisy) / 600 <= 0.12
    flips = collections.Counter((r["true_emotion"], r["label"]) for r in noisy)
    assert flips[("happy", "neutral")] > 2 * flips[("neutral", "happy")] > 0
    assert sum(flips.values()) == len(noisy), "only neutral/happy swaps"
    assert all(r["label"] == r["true_emotion"] for r in plan if not r["label_noise"] and r["true_emotion"])


def test_duplicates_are_byte_identical_to_an_earlier_sample():
    plan = demo_plan(600, seed=0)
    dups = [i for i, r in enumerate(plan) if r["defect"] == "duplicate"]
    assert dups
    i = dups[0]
    dup = demo_sample(i, 96, seed=0)
    j = dup.truth["duplicate_of"]
    original = demo_sample(j, 96, seed=0)
    assert j < i and original.truth["defect"] != "duplicate"
    assert content_id(encode_png(dup.image)) == content_id(encode_png(original.image))
    assert dup.label == original.label and dup.truth["true_emotion"] == original.truth["true_emotion"]


def test_facemesh_finds_clean_faces(sample, facemesh):
    clean = [s for s in sample if is_clean(s)]
    found = [finds_face(facemesh, s.image) for s in clean]
    assert len(clean) >= 80
    assert np.mean(found) >= 0.85, f"FaceMesh found {sum(found)}/{len(found)} clean faces"


def test_non_faces_have_no_face(facemesh):
    plan = demo_plan(600, seed=0)
    non_faces = [demo_sample(i, SIZE, seed=0) for i, r in enumerate(plan) if r["defect"] == "non_face"]
    found = [finds_face(facemesh, s.image) for s in non_faces]
    assert len(non_faces) >= 6 and sum(found) <= len(found) // 5, f"FaceMesh saw faces in {sum(found)} non-faces"


def test_too_small_faces_are_hard_to_find(sample, facemesh):
    """The defect must bite: a tiny face is missed by FaceMesh more often than a clean one (usually it is)."""
    small = [demo_sample(i, SIZE, seed=0) for i, r in enumerate(demo_plan(300, seed=0)) if r["defect"] == "too_small"]
    found = [finds_face(facemesh, s.image) for s in small]
    assert np.mean(found) <= 0.5


def test_judge_reads_neutral_and_happy(sample):
    assert os.path.isfile(JUDGE_WEIGHTS), f"judge weights {JUDGE_WEIGHTS} absent (they are committed)"
    from stages.lib.boxes import face_crop
    from stages.lib.judge import judge_probs, load_judge

    faces = [
        s
        for s in sample
        if s.truth["defect"] == "none"
        and not s.truth["label_noise"]
        and s.truth["true_emotion"] in ("neutral", "happy")
    ]
    probs = judge_probs(load_judge(JUDGE_WEIGHTS), [face_crop(s.image, s.truth["face_bbox"]) for s in faces])
    right = [(p[HAPPY] > p[NEUTRAL]) == (s.truth["true_emotion"] == "happy") for s, p in zip(faces, probs)]
    assert len(faces) >= 40
    assert np.mean(right) >= 0.85, f"judge agreed on {sum(right)}/{len(right)}"
    # label-noise faces are drawn with their true emotion: the judge should side with the drawing, not the label
    noisy = [s for s in sample if s.truth["label_noise"] and s.truth["defect"] == "none"]
    assert len(noisy) >= 5  # the sample must hold some, or this half of the test checks nothing
    p = judge_probs(load_judge(JUDGE_WEIGHTS), [face_crop(s.image, s.truth["face_bbox"]) for s in noisy])
    agree = [(q[HAPPY] > q[NEUTRAL]) == (s.truth["true_emotion"] == "happy") for s, q in zip(noisy, p)]
    assert np.mean(agree) >= 0.7


def test_the_demo_source_gives_the_same_records_drawn_in_worker_processes():
    """ingest draws the demo in one spawned process per core; the records (keys, labels, PNG bytes, truth) and their
    order are those of drawing in-process, including the last, partial task."""
    from stages.lib import sources

    n = 2 * sources.DEMO_TASK + 3
    alone = list(sources.demo(n, 64, seed=1, workers=1))
    pooled = list(sources.demo(n, 64, seed=1, workers=2))
    assert len(pooled) == n
    assert [(r.source_key, r.raw_label, r.data, r.truth) for r in pooled] == [
        (r.source_key, r.raw_label, r.data, r.truth) for r in alone
    ]
