"""What is random about a demo face: the person and the photo's light (`Look`), and the expression of an emotion."""

import math
from dataclasses import dataclass

import numpy as np

from .canvas import mix

SKIN_TONES = [(242, 208, 185), (226, 184, 152), (200, 150, 115), (160, 110, 80), (118, 78, 56), (88, 58, 42)]
HAIR_COLOURS = [(28, 22, 20), (60, 40, 28), (100, 66, 40), (170, 130, 80), (120, 56, 30), (140, 138, 135)]
IRIS_COLOURS = [(70, 45, 30), (100, 70, 40), (60, 100, 140), (80, 110, 70), (40, 30, 25)]
CLOTH_COLOURS = [(60, 70, 110), (140, 40, 40), (50, 90, 60), (200, 200, 200), (40, 40, 45), (150, 120, 70)]


@dataclass
class Look:
    """Everything random about one person and one photo, apart from the expression."""

    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    face_w: float  # face width relative to height
    jaw: float  # superellipse exponent of the jaw: larger is squarer
    hairline: float
    long_hair: bool
    light: np.ndarray  # unit light direction in face space (x right, y down, z towards the camera)
    ambient: float
    gaze: tuple
    eye_open: float
    brow_thick: float
    lip_full: float
    nose_w: float
    cloth: np.ndarray


def random_look(rng) -> Look:
    skin = mix(*_pick_pair(rng, SKIN_TONES), rng.random())
    lx, ly = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.1)
    light = np.array([lx, ly, 1.0]) / math.sqrt(lx * lx + ly * ly + 1.0)
    lips = skin * np.array([0.78, 0.52, 0.52]) + np.array([40, 10, 14]) * rng.uniform(0.5, 1.0)
    return Look(
        skin=skin,
        hair=np.asarray(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], np.float32) * rng.uniform(0.8, 1.15),
        iris=np.asarray(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], np.float32),
        lips=np.clip(lips, 0, 255),
        face_w=rng.uniform(0.9, 1.06),
        jaw=rng.uniform(1.7, 2.6),
        hairline=rng.uniform(-1.15, -0.95),
        long_hair=bool(rng.random() < 0.4),
        light=light,
        ambient=rng.uniform(0.45, 0.65),
        gaze=(rng.uniform(-0.03, 0.03), rng.uniform(-0.015, 0.015)),
        eye_open=rng.uniform(0.9, 1.1),
        brow_thick=rng.uniform(0.055, 0.085),
        lip_full=rng.uniform(0.85, 1.2),
        nose_w=rng.uniform(0.9, 1.15),
        cloth=np.asarray(CLOTH_COLOURS[rng.integers(len(CLOTH_COLOURS))], np.float32),
    )


def _pick_pair(rng, palette):
    k = int(rng.integers(len(palette) - 1))
    return palette[k], palette[k + 1]


@dataclass
class Expression:
    mouth_w: float  # half-width of the mouth
    corner: float  # how far the mouth corners rise (negative: fall)
    open_up: float  # mouth opening above the lip line
    open_down: float  # and below it
    round_mouth: bool  # an "O" rather than a smile-shaped opening
    teeth: bool
    eye_upper: float  # eye opening above and below its axis
    eye_lower: float
    brow_raise: float
    brow_inner: float  # extra rise of the brow's inner end (sad)
    cheeks: float  # raised-cheek highlight and crinkles, 0..1
    folds: float  # nasolabial fold strength, 0..1


def _happy(rng) -> Expression:
    open_smile = rng.random() < 0.75
    return Expression(
        mouth_w=rng.uniform(0.42, 0.5), corner=rng.uniform(0.13, 0.2),
        open_up=rng.uniform(0.0, 0.02) if open_smile else 0.0,
        open_down=rng.uniform(0.1, 0.17) if open_smile else 0.0, round_mouth=False, teeth=open_smile,
        eye_upper=rng.uniform(0.07, 0.085), eye_lower=rng.uniform(0.015, 0.03), brow_raise=rng.uniform(-0.02, 0.02),
        brow_inner=0.0, cheeks=rng.uniform(0.7, 1.0), folds=rng.uniform(0.7, 1.0)
    )  # fmt: skip


def _sad(rng) -> Expression:
    return Expression(
        mouth_w=rng.uniform(0.28, 0.33), corner=-rng.uniform(0.11, 0.15), open_up=0.0, open_down=0.0,
        round_mouth=False, teeth=False, eye_upper=rng.uniform(0.07, 0.085), eye_lower=rng.uniform(0.045, 0.055),
        brow_raise=0.0, brow_inner=rng.uniform(0.1, 0.14), cheeks=0.0, folds=0.0
    )  # fmt: skip


def _surprise(rng) -> Expression:
    return Expression(
        mouth_w=rng.uniform(0.16, 0.2), corner=0.0, open_up=rng.uniform(0.09, 0.12),
        open_down=rng.uniform(0.15, 0.2), round_mouth=True, teeth=False, eye_upper=rng.uniform(0.13, 0.15),
        eye_lower=rng.uniform(0.075, 0.09), brow_raise=rng.uniform(0.12, 0.16), brow_inner=0.0, cheeks=0.0,
        folds=0.0
    )  # fmt: skip


def _neutral(rng) -> Expression:
    return Expression(
        mouth_w=rng.uniform(0.32, 0.37), corner=rng.uniform(-0.01, 0.015), open_up=0.0, open_down=0.0,
        round_mouth=False, teeth=False, eye_upper=rng.uniform(0.095, 0.11), eye_lower=rng.uniform(0.055, 0.065),
        brow_raise=0.0, brow_inner=0.0, cheeks=0.0, folds=0.0
    )  # fmt: skip


def expression(rng, emotion: str) -> Expression:
    """The drawn expression of `emotion` (any other emotion is drawn neutral), varied by `rng`."""
    return {"happy": _happy, "sad": _sad, "surprise": _surprise}.get(emotion, _neutral)(rng)
