"""The curator: a small CNN trained on the ingested labels, cross-fitted so every face gets out-of-fold probabilities,
and confident learning (cleanlab) on those probabilities to flag label issues.

Two backbones (params curator.backbone):
- judge (default): a small head trained on the frozen features of the pretrained mini-Xception. It reaches 0.92
  out-of-fold neutral-vs-happy accuracy on the real photos in seconds; from scratch, 1.6k photos give ~0.87 in minutes.
  The judge only supplies the features: the curator's decisions come from the ingested labels it is trained on.
- scratch: CuratorNet, a 3-block CNN trained from random weights on the grey crop (+ region masks).

Use (the train_curator stage does this; classes, labels and label issues live in stages/lib/label_issues.py):
    x = judge_features(images, bboxes)                                # (N, 2, 128): backbone=judge
    x = face_inputs(images, bboxes, size=48, label_maps=None)         # (N, 1, 48, 48); with maps: (N, 4, 48, 48)
    probs, folds = cross_fit(x, y, len(classes), CuratorConfig(), device="cpu")
    net = train_net(x, y, len(classes), cfg, "cpu", final_seed(cfg))  # the final curator
    save_curator("models/curator/curator.pt", net, dict(backbone="judge", input="grey_masks", size=48,
                 classes=classes, source="neutral", target="happy"))
    curator = load_curator("models/curator/curator.pt", "cpu")       # evaluate: classify new faces
    probs = curator_probs(curator, grey_images, bboxes, label_maps)   # (N, len(classes)), same preprocessing

The minor emotions are merged into one `other` class: they are too few (9-60 per class in the real photos) for a
net to learn each one from scratch in a few epochs.
"""

import ctypes
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import paths
from .boxes import face_box, face_crop
from .codec import decode_image, decode_png, to_grey
from .errors import StageError
from .judge import STREAM_BATCH
from .labels import REGIONS
from .optim import OneCycleAdam
from .tables import iter_faces, save_torch_atomic

MASK_REGIONS = ("eyes", "brows", "lips")
CROP_MARGIN = 0.1  # the judge's default, so both classifiers see the same face square


def _grey_input(grey_crop: np.ndarray, size: int) -> np.ndarray:
    face = cv2.resize(grey_crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    # Standardised per face: the photos differ in exposure far more than in expression.
    return (face - face.mean()) / (face.std() + 1e-3)


def _mask_inputs(map_crop: np.ndarray, size: int) -> np.ndarray:
    chans = [
        cv2.resize(np.isin(map_crop, REGIONS[r]).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        for r in MASK_REGIONS
    ]
    return np.stack(chans)


def face_inputs(images, bboxes, size: int, label_maps=None, margin=CROP_MARGIN) -> np.ndarray:
    """(N, C, size, size) float32 network inputs: the standardised grey face square cropped around its bbox, plus
    (when `label_maps` is given) the eyes, brows and lips masks cropped the same way, as fractions in [0, 1].

    A missing bbox uses the whole image; a missing label map gives empty mask channels.
    """
    channels = 1 + (len(MASK_REGIONS) if label_maps is not None else 0)
    out = np.zeros((len(images), channels, size, size), np.float32)
    for i, img in enumerate(images):
        box = face_box(img, bboxes[i])
        out[i, 0] = _grey_input(face_crop(img, box, margin), size)
        if label_maps is not None and label_maps[i] is not None:
            out[i, 1:] = _mask_inputs(face_crop(label_maps[i], box, margin), size)
    return out


def curator_inputs(ids, backbone: str, with_masks: bool, size: int, device):
    """(x, labels, splits) for `ids`, in that order: the net's inputs (judge_features or face_inputs) computed a row
    group at a time while the images stream past, so only they stay in memory (backbone=judge: 2 x F floats a face),
    written straight into one array rather than stacked at the end (at 20k faces a copy of them is ~50 MB)."""
    judge = None
    if backbone == "judge":
        from .judge import load_judge

        judge = load_judge(device=device)
    position = {face_id: k for k, face_id in enumerate(ids)}
    x, labels, splits = None, [None] * len(ids), [None] * len(ids)
    seen = np.zeros(len(ids), bool)
    parse_columns = ["face_bbox"] + (["label_map"] if with_masks else [])
    with tqdm(total=len(ids), desc="curator inputs", unit="face") as bar:
        for rows in iter_faces(ids, ["label", "split", "image"], parse_columns, batch_rows=STREAM_BATCH):
            rows = [r for r in rows if r.get("image") is not None]
            if not rows:
                continue
            greys = [to_grey(decode_image(r["image"])) for r in rows]
            bboxes = [r.get("face_bbox") for r in rows]
            maps = [decode_png(r["label_map"]) if r.get("label_map") else None for r in rows] if with_masks else None
            if judge is not None:
                batch = judge_features(greys, bboxes, label_maps=maps, model=judge)
            else:
                batch = face_inputs(greys, bboxes, size, maps)
            if x is None:
                x = np.zeros((len(ids), *batch.shape[1:]), np.float32)
            at = np.array([position[r["id"]] for r in rows])
            x[at], seen[at] = batch, True
            for k, r in zip(at, rows):
                labels[k], splits[k] = r["label"], r["split"]
            bar.update(len(rows))
    if not seen.all():
        missing = [face_id for face_id, ok in zip(ids, seen) if not ok]
        raise StageError(
            f"{paths.IMAGES} lacks image bytes for {len(missing)} kept ids (e.g. {missing[0]}); rerun ingest"
        )
    release_freed_heap()
    return x, labels, splits


def release_freed_heap():
    """Hand the memory that a streamed pass freed back to the OS: pyarrow's pool and glibc's heap (malloc_trim; a
    no-op elsewhere). Both keep what the judge pass freed mapped otherwise, and the stage's next phase (the folds
    import scikit-learn, which cleanlab needs too: ~100 MB) would stack its peak on top of it."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


class CuratorNet(nn.Module):
    """Three conv blocks (each two 3x3 convs, BN, ReLU, 2x2 max pool) and global average pooling: ~100k weights,
    enough for expression cues at 48x48 and quick to train on two CPU cores."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 16):
        super().__init__()
        layers, cin = [], in_channels
        for cout in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x):
        return self.head(self.dropout(self.features(x).mean(dim=(2, 3))))


@dataclass
class CuratorConfig:
    folds: int = 5
    epochs: int = 6
    batch: int = 64
    lr: float = 0.002
    seed: int = 0


class FeatureHead(nn.Module):
    """The curator on the judge backbone: a two-layer head on the frozen mini-Xception's 128-d face features."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(hidden, n_classes)
        )

    def forward(self, x):
        return self.net(x)


MASK_GRID = 8  # grey_masks on the judge backbone: each region mask pooled to 8x8 and appended to the features


def judge_features(images, bboxes, device="cpu", margin=CROP_MARGIN, label_maps=None, model=None) -> np.ndarray:
    """(N, 2, F) inputs for the feature head: the pretrained judge's 128-d trunk features of each face crop and of its
    mirror image (the head trains on both views, as the scratch net trains on flips). With `label_maps`, the eyes,
    brows and lips masks pooled to 8x8 (mirrored for the mirror view) are appended: F = 128 + 3 * 64. `model`: an
    already loaded judge (else it is loaded on `device`)."""
    from .judge import features, load_judge

    model = model if model is not None else load_judge(device=device)
    crops = []
    for img, box in zip(images, bboxes):
        crops.append(face_crop(img, face_box(img, box), margin))
    plain = features(model, crops)
    mirrored = features(model, [np.ascontiguousarray(c[:, ::-1]) for c in crops])
    if label_maps is not None:
        empty = np.zeros((len(MASK_REGIONS), MASK_GRID, MASK_GRID), np.float32)
        grids = np.stack(
            [
                _mask_inputs(face_crop(m, face_box(m, b), margin), MASK_GRID) if m is not None else empty
                for m, b in zip(label_maps, bboxes)
            ]
        )
        plain = np.concatenate([plain, grids.reshape(len(grids), -1)], axis=1)
        mirrored = np.concatenate([mirrored, grids[..., ::-1].reshape(len(grids), -1)], axis=1)
    return np.stack([plain, mirrored], axis=1).astype(np.float32)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 3 pixels: expressions are symmetric and crops jitter.
    Feature inputs (N, 2, F) hold a face's two views; one is picked at random."""
    if x.ndim == 3:
        pick = (torch.rand(len(x), generator=gen) < 0.5).long()
        return x[torch.arange(len(x)), pick]
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = 3
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def train_net(
    x: np.ndarray, y: np.ndarray, n_classes: int, cfg: CuratorConfig, device, seed: int, rows=None
) -> CuratorNet:
    """Train one net on (x, y) with Adam on a one-cycle schedule (stages/lib/optim.py) and class-balanced
    cross-entropy; on `rows` of them only when given (read in place: a fold's copy of 20k faces' inputs would be
    ~40 MB)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = (FeatureHead(x.shape[2], n_classes) if x.ndim == 3 else CuratorNet(x.shape[1], n_classes)).to(device)
    rows = torch.arange(len(y)) if rows is None else torch.from_numpy(np.asarray(rows, np.int64))
    y = y[rows.numpy()]
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    freq = np.bincount(y, minlength=n_classes).astype(np.float64)
    # Balanced weights: `other` is rare, and a skewed source/target ratio must not become a prior the filter trusts.
    weight = torch.tensor(np.where(freq > 0, len(y) / (n_classes * np.maximum(freq, 1)), 0.0), dtype=torch.float32)
    steps = cfg.epochs * max(1, -(-len(y) // cfg.batch))
    opt = OneCycleAdam(net.parameters(), lr=cfg.lr, total_steps=steps, weight_decay=1e-4, pct_start=0.2)
    net.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), cfg.batch):
            idx = order[start : start + cfg.batch]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            xb = _augment(xs[rows[idx]], gen).to(device)
            loss = F.cross_entropy(net(xb), ys[idx].to(device), weight=weight.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def predict(net: CuratorNet, x: np.ndarray, device, batch=512) -> np.ndarray:
    """Softmax probabilities, averaged over the face and its mirror image."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(x[start : start + batch]).to(device)
            if xb.ndim == 3:  # feature pairs: the face and its mirror image
                p = torch.softmax(net(xb[:, 0]), 1) + torch.softmax(net(xb[:, 1]), 1)
            else:
                p = torch.softmax(net(xb), 1) + torch.softmax(net(xb.flip(3)), 1)
            out.append((p / 2).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fold_of(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold index per row; fewer folds when a class is too small to appear in each."""
    from sklearn.model_selection import StratifiedKFold

    smallest = np.bincount(y)[np.bincount(y) > 0].min()
    k = int(min(folds, max(2, smallest)))
    out = np.zeros(len(y), np.int64)
    if np.bincount(y)[np.bincount(y) > 0].min() < 2:
        # a class with one member cannot be stratified; a plain seeded shuffle still gives out-of-fold probs
        out[np.random.default_rng(seed).permutation(len(y))] = np.arange(len(y)) % k
        return out
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        out[test] = f
    return out


def cross_fit(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: CuratorConfig, device="cpu"):
    """Out-of-fold probabilities (N, n_classes) and each row's fold: each fold is predicted by a net that never saw
    it."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    folds = fold_of(y, cfg.folds, cfg.seed)
    probs = np.zeros((len(y), n_classes), np.float32)
    for f in tqdm(range(folds.max() + 1), desc="curator folds", unit="fold"):
        test = folds == f
        net = train_net(x, y, n_classes, cfg, device, seed=cfg.seed * 1000 + f, rows=np.flatnonzero(~test))
        probs[test] = predict(net, x[test], device)
    return probs, folds


# ---- the final curator: one net on every row, saved so that evaluate can classify new (edited) faces -------------

CURATOR_META = ("backbone", "input", "size", "classes", "source", "target")


def final_seed(cfg: CuratorConfig) -> int:
    """The seed scheme of cross_fit (seed * 1000 + fold), continued: the final net is 'fold' number `folds`."""
    return cfg.seed * 1000 + cfg.folds


def save_curator(path, net: nn.Module, meta: dict):
    """torch.save a dict of plain types (weights_only-loadable): the state_dict, the net's shape, and `meta`
    (CURATOR_META: backbone, input, size, classes, source, target), atomically and byte-stable."""
    missing = [k for k in CURATOR_META if k not in meta]
    if missing:
        raise ValueError(f"curator meta lacks {missing}")
    if isinstance(net, FeatureHead):
        shape = {"arch": "feature_head", "in_features": net.net[0].in_features}
    else:
        shape = {"arch": "curator_net", "in_channels": net.features[0].in_channels}
    blob = {
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "n_classes": len(meta["classes"]),
        "margin": CROP_MARGIN,
        **shape,
        **{k: meta[k] for k in CURATOR_META},
    }
    save_torch_atomic(blob, path)


@dataclass
class Curator:
    """A loaded final curator: the net in eval mode plus what curator_probs needs to prepare its inputs."""

    net: nn.Module
    backbone: str
    input: str
    size: int
    classes: list
    source: str
    target: str
    margin: float
    device: object


def _build(blob: dict) -> nn.Module:
    if blob["arch"] == "feature_head":
        return FeatureHead(int(blob["in_features"]), int(blob["n_classes"]))
    if blob["arch"] == "curator_net":
        return CuratorNet(int(blob["in_channels"]), int(blob["n_classes"]))
    raise ValueError(f"unknown curator arch {blob['arch']!r}")


def load_curator(path, device="cpu") -> Curator:
    """The saved final curator on `device`; a missing, damaged or foreign file is a one-line StageError."""
    redo = "train it with `dvc repro train_curator`"
    if not os.path.isfile(path):
        raise StageError(f"curator model {path} not found; {redo}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = _build(blob)
        net.load_state_dict(blob["state_dict"])
        meta = {k: blob[k] for k in CURATOR_META}
        margin = float(blob["margin"])
    except Exception as err:  # torch, the dict lookups and load_state_dict raise many types for a foreign file
        first = (str(err).strip().splitlines() or [""])[0]
        raise StageError(f"curator model {path} is unreadable ({type(err).__name__}: {first}); {redo}") from None
    return Curator(net=net.to(device).eval(), margin=margin, device=device, **meta)


def curator_probs(curator: Curator, grey_images, bboxes, label_maps=None) -> np.ndarray:
    """(N, len(curator.classes)) probabilities for faces the curator never saw, prepared exactly as in training
    (face_inputs or judge_features on the same face square). Images are made grey as ingest's to_grey does.

    A grey_masks curator needs `label_maps` (one per image; a None entry gives empty masks, as in training); a grey
    curator ignores them.
    """
    greys = [to_grey(np.asarray(img)) for img in grey_images]
    maps = None
    if curator.input == "grey_masks":
        if label_maps is None or len(label_maps) != len(greys):
            raise StageError(
                f"the curator reads input=grey_masks: it needs one label map per image, got "
                f"{'none' if label_maps is None else len(label_maps)} for {len(greys)} images"
            )
        maps = list(label_maps)
    if curator.backbone == "judge":
        x = judge_features(greys, bboxes, curator.device, curator.margin, label_maps=maps)
    else:
        x = face_inputs(greys, bboxes, curator.size, maps, curator.margin)
    if not len(x):
        return np.zeros((0, len(curator.classes)), np.float32)
    return predict(curator.net, x, curator.device)


def curator_classifier(path, source: str, target: str, device):
    """The final curator at `path` and, for evaluate_faces, a callable (images, face boxes, label maps) ->
    (probs, classes); it must have been trained for these emotions."""
    curator = load_curator(path, device)
    if (curator.source, curator.target) != (source, target):
        raise StageError(
            f"{path} was trained for {curator.source}->{curator.target}, the params ask for "
            f"{source}->{target}; retrain it with `dvc repro train_curator`"
        )

    def classify(images, face_boxes, label_maps):
        return curator_probs(curator, images, face_boxes, label_maps), curator.classes

    return curator, classify


def cross_fit_summary(classes, y, probs, issues, source, target) -> dict:
    """metrics/train_curator.json's out-of-fold numbers: accuracy over every class and source vs target, issues."""
    pred = probs.argmax(axis=1)
    st = y < 2  # classes[0] is the source, classes[1] the target
    binary = (probs[st, 1] > probs[st, 0]).astype(int) == y[st]
    return {
        "rows": int(len(y)),
        "classes": classes,
        "rows_per_class": {c: int((y == k).sum()) for k, c in enumerate(classes)},
        "oof_accuracy": round(float((pred == y).mean()), 4) if len(y) else 0.0,
        f"oof_accuracy_{source}_vs_{target}": round(float(binary.mean()), 4) if st.any() else 0.0,
        "label_issues": int(issues.sum()),
        "label_issues_per_class": {c: int((issues & (y == k)).sum()) for k, c in enumerate(classes)},
    }
