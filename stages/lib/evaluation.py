"""Overlay evaluation of one ROI translator: translate each test face's ROI, paste it back, and score the composites.

Use (stages/evaluate.py reads the tables and calls this; tests call it with tiny fake generators):
    from stages.lib.evaluation import Face, translate, evaluate_faces
    faces = [Face(id, image, face_bbox, bbox, crop, alpha, label_map), ...]  # domain A, split test, kept
    generated = translate(generator, [f.crop for f in faces], device)  # uint8 RGB crops, generator A->B
    metrics, picks = evaluate_faces(faces, generated, judge, "neutral", "happy", real_target_crops, config)
    # with the saved curator (stages.lib.curator), for curator_transfer_rate:
    cur = load_curator("models/curator/curator.pt", device)
    metrics, picks = evaluate_faces(..., curator=lambda imgs, boxes, maps: (curator_probs(cur, imgs, boxes, maps),
                                                                            cur.classes))

What is measured, and why each number is defined so:
- transfer_rate (headline): share of composites whose judge argmax over all 7 FER classes is the target. It is the
  research's "test-acc": the edit must beat every other emotion, not only the source. transfer_rate_binary
  (p[target] > p[source]) is the looser source-vs-target reading. Both are also given for the unedited originals
  (baseline_rate*), with the difference (transfer_gain*), since a judge that already calls 30% of neutral faces
  happy makes a 35% transfer rate worthless.
- target_prob_gain: mean of p_composite[target] - p_original[target], a graded version of the same.
- curator_*: the share of composites (and of originals) whose argmax is the target for the curator classifier, the
  final net train_curator saves (secondary: the curator was trained on this data's labels, so it is not independent).
  It reads the same face box; a grey_masks curator gets the original's parsed label map for the composite too, since
  the paste changes pixels only inside the ROI. Null when no curator is given.
- outside_changed_px: pixels outside the alpha's support that differ from the original; must be 0.
- psnr/ssim _image and _roi: composite vs original, over the whole image and over the ROI box (clipped to the
  image). They measure how much was changed, not whether the change is good.
- kid_roi: KID between the generator's raw A->B crops and real domain-B test crops, in the judge's penultimate
  feature space (judge.features). See the README's evaluation section for what it does and does not measure.
- brightness_shift: mean over faces of |alpha-weighted mean luma of composite - of original| inside the paste mask,
  with the configured colour matching; brightness_shift_raw the same without colour matching.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .codec import to_rgb
from .contact_sheet import contact_sheet
from .errors import StageError
from .judge import face_crop, features, judge_probs
from .labels import FER_ORDER
from .overlay import brightness_shift, color_match, composite, outside_changed_px
from .quality import kid, psnr, ssim_map


@dataclass
class Face:
    """One test face: its photo, the parser's face box (None: the whole image), its ROI row, and its parsed label map
    (only a grey_masks curator reads it; None otherwise)."""
    id: str
    image: np.ndarray
    face_bbox: object
    bbox: tuple
    crop: np.ndarray
    alpha: np.ndarray
    label_map: np.ndarray = None


@dataclass
class EvalConfig:
    color_match: str = "context"
    blend: str = "alpha"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    n_samples: int = 8
    judge_batch: int = 256


@dataclass
class Picks:
    """The first faces, for the sample sheet: rows of (face, generated crop as pasted, composite), and the judge's
    p[target] for each original and composite."""
    rows: list = field(default_factory=list)
    p_orig: np.ndarray = None
    p_comp: np.ndarray = None
    target: str = ""


def sample_sheet(picks: Picks, path, thumb=96):
    """The research's sample figure as a DVC image plot: one row per face, original | ROI | generated | composite."""
    images, captions = [], []
    for (face, pasted, out), po, pc in zip(picks.rows, picks.p_orig, picks.p_comp):
        images += [face.image, face.crop, pasted, out]
        captions += [f"{face.id[:8]} p={po:.2f}", "ROI", "generated", f"{picks.target} p={pc:.2f}"]
    return contact_sheet(images, captions, path, cols=4, thumb=thumb)


def translate(generator, crops, device, batch: int = 64) -> list:
    """Run the A->B generator over uint8 crops (grey or RGB) and return uint8 RGB crops of the same size.

    The generator works on RGB in [-1, 1] (tanh output), as train writes in its config.
    """
    out = []
    device = torch.device(device)
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            chunk = np.stack([to_rgb(c) for c in crops[start:start + batch]])
            x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            y = generator(x).float().clamp(-1, 1)
            if y.shape != x.shape:
                raise StageError(f"generator turned crops of shape {tuple(x.shape)} into {tuple(y.shape)}")
            pixels = ((y + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(pixels)
    return out


def _class_index(emotion: str, role: str) -> int:
    if emotion not in FER_ORDER:
        raise StageError(f"the judge knows only {', '.join(FER_ORDER)}; emotions.{role}={emotion!r} cannot be judged")
    return FER_ORDER.index(emotion)


def _face_box(face: Face):
    if face.face_bbox is None:
        h, w = face.image.shape[:2]
        return (0, 0, w, h)
    return face.face_bbox


def _box_region(bbox, shape) -> np.ndarray:
    x, y, w, h = (int(v) for v in bbox)
    region = np.zeros(shape[:2], bool)
    region[max(y, 0):max(min(y + h, shape[0]), 0), max(x, 0):max(min(x + w, shape[1]), 0)] = True
    return region


def _rates(probs: np.ndarray, source: int, target: int):
    argmax = probs.argmax(axis=1) == target
    binary = probs[:, target] > probs[:, source]
    return float(argmax.mean()), float(binary.mean())


def _score_face(face: Face, gen: np.ndarray, config: EvalConfig) -> tuple:
    """The composite of one face and its pixel-level numbers (outside change, brightness, PSNR, SSIM)."""
    out = composite(face.image, gen, face.crop, face.bbox, face.alpha, config.color_match, config.blend)
    raw = out if config.color_match == "none" else \
        composite(face.image, gen, face.crop, face.bbox, face.alpha, "none", config.blend)
    region = _box_region(face.bbox, face.image.shape)
    ssim = ssim_map(face.image, out)
    scores = {
        "outside_changed_px": outside_changed_px(face.image, out, face.alpha, face.bbox),
        "brightness_shift": brightness_shift(face.image, out, face.alpha, face.bbox),
        "brightness_shift_raw": brightness_shift(face.image, raw, face.alpha, face.bbox),
        "psnr_image": psnr(face.image, out),
        "psnr_roi": psnr(face.image, out, region),
        "ssim_image": float(ssim.mean()),
        "ssim_roi": float(ssim[region].mean()),
    }
    return out, scores


def _kid(generated, real_target_crops, judge, config: EvalConfig):
    """KID of generated vs real target crops in the judge's feature space; (None, None) below 2 crops a side."""
    if len(generated) < 2 or len(real_target_crops) < 2:
        return None, None
    fake = features(judge, generated, config.judge_batch)
    real = features(judge, list(real_target_crops), config.judge_batch)
    return kid(fake, real, config.kid_subsets, config.kid_subset_size, config.seed)


def _curator_rates(curator, faces, composites, face_boxes, target: str) -> dict:
    """curator_transfer_rate (argmax is the target) and its baseline on the originals; nulls without a curator.
    The composite keeps the original's label map: the paste only changes pixels inside the ROI."""
    if curator is None:
        return {"curator_transfer_rate": None, "curator_baseline_rate": None}
    maps = [f.label_map for f in faces]
    p_orig, classes = curator([f.image for f in faces], face_boxes, maps)
    p_comp, _ = curator(composites, face_boxes, maps)
    if target not in classes:
        raise StageError(f"the curator's classes {classes} lack emotions.target={target!r}; retrain it")
    tgt = classes.index(target)
    rate = float((p_comp.argmax(axis=1) == tgt).mean())
    base = float((p_orig.argmax(axis=1) == tgt).mean())
    return {"curator_transfer_rate": rate, "curator_baseline_rate": base}


def evaluate_faces(faces, generated, judge, source: str, target: str, real_target_crops, config: EvalConfig,
                   curator=None):
    """Composite every face and score the composites against the originals; returns (metrics dict, Picks).

    `curator`, when given, is a callable (whole images, face boxes, label maps) -> (probs (N, C), classes), called
    on the originals and on the composites with the judge's face boxes, for the secondary curator_* rates (None:
    those rates are null); it crops the faces itself, as its training did. `real_target_crops` are the domain-B
    test crops KID compares with.
    """
    if not faces:
        raise StageError("no test faces to evaluate")
    if len(generated) != len(faces):
        raise StageError(f"{len(generated)} generated crops for {len(faces)} faces")
    src, tgt = _class_index(source, "source"), _class_index(target, "target")
    picks, per_face, composites, composite_images, face_boxes = Picks(), [], [], [], []
    for i, (face, gen) in enumerate(zip(tqdm(faces, desc="composite", unit="face", leave=False), generated)):
        out, scores = _score_face(face, gen, config)
        per_face.append(scores)
        face_boxes.append(_face_box(face))
        composites.append(face_crop(out, face_boxes[-1]))
        if curator is not None:  # whole composites, kept only for the curator, which crops them itself
            composite_images.append(out)
        if i < config.n_samples:
            pasted = color_match(gen, face.crop, face.alpha, config.color_match)
            picks.rows.append((face, pasted, out))
    originals = [face_crop(f.image, box) for f, box in zip(faces, face_boxes)]
    p_orig = judge_probs(judge, originals, config.judge_batch)
    p_comp = judge_probs(judge, composites, config.judge_batch)
    rate, rate_binary = _rates(p_comp, src, tgt)
    base, base_binary = _rates(p_orig, src, tgt)
    kid_mean, kid_std = _kid(generated, real_target_crops, judge, config)
    metrics = {
        "n_test": len(faces),
        "n_real_target": len(real_target_crops),
        "transfer_rate": rate,
        "transfer_rate_binary": rate_binary,
        "baseline_rate": base,
        "baseline_rate_binary": base_binary,
        "transfer_gain": rate - base,
        "transfer_gain_binary": rate_binary - base_binary,
        "target_prob_gain": float(np.mean(p_comp[:, tgt] - p_orig[:, tgt])),
        "kid_roi": kid_mean,
        "kid_roi_std": kid_std,
        "outside_changed_px": int(sum(s["outside_changed_px"] for s in per_face)),
    }
    for key in ("brightness_shift", "brightness_shift_raw", "psnr_image", "psnr_roi", "ssim_image", "ssim_roi"):
        metrics[key] = float(np.mean([s[key] for s in per_face]))
    metrics.update(_curator_rates(curator, faces, composite_images, face_boxes, target))
    picks.p_orig, picks.p_comp, picks.target = p_orig[:len(picks.rows), tgt], p_comp[:len(picks.rows), tgt], target
    return metrics, picks
