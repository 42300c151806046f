"""Canonical emotion and face-parsing labels, shared by every stage (see ../shared/DESIGN.md)."""

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
# FER2013's integer ids, in FER's own order; the mini-Xception judge uses the same order.
FER_ORDER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

_SPELLINGS = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "smiling": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
}


def canonical_emotion(raw):
    """The canonical label for a source spelling or FER id, or None when it is unknown (a reject, not a guess)."""
    if raw is None:
        return None
    # isascii: str.isdigit also accepts digits such as '³' that int() refuses.
    if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit()):
        i = int(raw)
        return FER_ORDER[i] if 0 <= i < len(FER_ORDER) else None
    return _SPELLINGS.get(str(raw).strip().lower())


PARSE_CLASSES = [
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
]
N_PARSE_CLASSES = len(PARSE_CLASSES)
REGIONS = {"eyes": (4, 5), "brows": (2, 3), "lips": (12, 13), "mouth": (11, 12, 13), "nose": (10,)}
