"""The demo's plan: which emotion, given label, label noise and defect each sample gets, without drawing anything.

Emotions, label noise and defects are dealt from a shuffled deck per block of `BLOCK` samples, so the rates are exact
on whole blocks and close on any prefix; slot i depends only on (i, seed).
"""

from dataclasses import dataclass

import numpy as np

DEFECTS = (
    "none",
    "mouth_occluded",
    "eyes_occluded",
    "sunglasses",
    "eyes_closed",
    "too_small",
    "cut_off",
    "non_face",
    "duplicate",
)

# One deck per block of BLOCK samples. Counts are per block.
BLOCK = 300
EMOTION_DECK = {"neutral": 126, "happy": 126, "sad": 24, "surprise": 24}
DEFECT_DECK = {
    "mouth_occluded": 12,
    "eyes_occluded": 9,
    "sunglasses": 9,
    "eyes_closed": 9,
    "too_small": 9,
    "cut_off": 9,
    "non_face": 5,
    "duplicate": 1,
}
# Label noise is put on defect-free faces only, so that each reject has exactly one cause to score.
NOISE_HAPPY_AS_NEUTRAL = 22
NOISE_NEUTRAL_AS_HAPPY = 8


@dataclass(frozen=True)
class Slot:
    emotion: str
    label: str
    label_noise: bool
    defect: str


def _block_plan(seed: int, block: int) -> list:
    """The BLOCK slots of one block: emotion, given label, noise and defect, shuffled by (seed, block)."""
    rng = np.random.default_rng([seed, block, 101])
    emotions = [e for e, k in EMOTION_DECK.items() for _ in range(k)]
    defects = [d for d, k in DEFECT_DECK.items() for _ in range(k)]
    defects += ["none"] * (BLOCK - len(defects))
    emotions = [emotions[j] for j in rng.permutation(BLOCK)]
    defects = [defects[j] for j in rng.permutation(BLOCK)]
    if block == 0 and defects[0] == "duplicate":  # the very first sample has nothing to duplicate
        k = defects.index("none")
        defects[0], defects[k] = defects[k], defects[0]
    labels, noise = list(emotions), [False] * BLOCK
    clean = [j for j in rng.permutation(BLOCK) if defects[j] == "none"]
    flips = [j for j in clean if emotions[j] == "happy"][:NOISE_HAPPY_AS_NEUTRAL] + [
        j for j in clean if emotions[j] == "neutral"
    ][:NOISE_NEUTRAL_AS_HAPPY]
    for j in flips:
        labels[j] = "neutral" if emotions[j] == "happy" else "happy"
        noise[j] = True
    return [Slot(emotions[j], labels[j], noise[j], defects[j]) for j in range(BLOCK)]


_PLAN_CACHE: dict = {}


def planned_slot(seed: int, index: int) -> Slot:
    key = (seed, index // BLOCK)
    if key not in _PLAN_CACHE:
        if len(_PLAN_CACHE) > 64:
            _PLAN_CACHE.clear()
        _PLAN_CACHE[key] = _block_plan(*key)
    return _PLAN_CACHE[key][index % BLOCK]


def demo_plan(n: int = 600, seed: int = 0) -> list:
    """What `render_demo(n, seed=seed)` will draw, without drawing it: per sample a dict of `label` and the truth
    fields `true_emotion, label_noise, defect, duplicate_of` (no face box: that needs the drawing)."""
    plan = []
    for i in range(n):
        slot = planned_slot(seed, i)
        if slot.defect == "duplicate":
            source = duplicate_source(seed, i)
            row = dict(plan[source], defect="duplicate", duplicate_of=source)
        else:
            row = dict(slot_truth(slot), label=slot.label)
        plan.append(row)
    return plan


def slot_truth(slot: Slot) -> dict:
    return {
        "true_emotion": None if slot.defect == "non_face" else slot.emotion,
        "label_noise": slot.label_noise,
        "defect": slot.defect,
        "duplicate_of": None,
    }


def duplicate_source(seed: int, index: int) -> int:
    """The earlier sample that duplicate `index` copies: an original (itself no duplicate), so chains stay short."""
    rng = np.random.default_rng([seed, index, 303])
    while True:
        source = int(rng.integers(0, index))
        if planned_slot(seed, source).defect != "duplicate":
            return source
