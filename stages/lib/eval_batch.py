"""One batch of an evaluation: paste every edit's crops into the batch's test faces and score the originals and the
composites with the judges. Only per-face numbers leave it (and the composites, of which the sample sheet keeps a
few); stages/lib/evaluation.py gathers them over the batches and reduces them.

    from stages.lib.eval_batch import score_batch
    scored = score_batch(faces, {"comp": generated, "control": own_crops}, judges, config, src, tgt)
    scored.table["comp_hit"]            # per-face arrays, the bootstrap's columns

Each face's numbers depend on that face alone, never on the batch it came in: the CNN judge always runs on inputs
of JUDGE_ROWS faces (the last chunk padded), because torch's CPU kernels give the same face other float bits at
some batch sizes (1, 3, 7 and 63 of 1-64, measured 2026-12-01); the generator, FaceMesh and dlib read one face at a
time or gave the same bits at every batch size tried.
"""

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .boxes import face_box, face_crop
from .errors import StageError
from .identity import embed_all, embedding_distances, same_person
from .judge import INPUT_SIZE, features, judge_probs
from .overlay import brightness_shift, outside_changed_px
from .quality import psnr, ssim_map

# Faces per judge input. Padded to this, every face gets the bits a whole-set pass over 2-256 faces gave before the
# evaluation streamed (one face alone gets other bits), so the metrics stayed byte-identical. 16, not the stream's 64:
# the same bits, and a 15-face test set pays for 16 padded rows per judge call instead of 64 (evaluate 4.6 -> 3.4 s).
JUDGE_ROWS = 16
PIXEL_KEYS = ("brightness_shift", "brightness_shift_raw", "psnr_image", "psnr_roi", "ssim_image", "ssim_roi")


def fixed_rows(head, model, grey_faces, rows: int = JUDGE_ROWS) -> np.ndarray:
    """head(model, faces, rows) (judge_probs or features) on inputs of exactly `rows` faces, blank ones padding the
    last; the padding's outputs are dropped."""
    faces = list(grey_faces)
    blank = np.zeros((INPUT_SIZE, INPUT_SIZE), np.uint8)
    return head(model, faces + [blank] * (-len(faces) % rows), rows)[: len(faces)]


@dataclass
class BatchScores:
    """What one batch leaves: per-face arrays and lists (one entry per face, in the batch's order) and sums."""

    table: dict  # the bootstrap's columns: orig_* and <edit>_* (hit, bin, p, geo, geo_above, id_dist, id_kept)
    agree: np.ndarray  # the CNN judge's p[source] >= p[target] on the original (judge_label_agreement)
    pixels: dict  # PIXEL_KEYS: the translator's composite vs the original
    curator: dict  # {"orig": hits, "comp": hits} of the curator's argmax on the target; {} without a curator
    embeddings: list  # dlib embeddings of the originals (None without a box, or with identity off)
    features: dict  # {edit: (N, 128) judge features of its raw crops} for KID; {} for an edit of several ROIs
    outside: dict  # {edit: pixels changed outside the paste support, summed over the batch}
    composites: list  # the translator's composites


def _box_region(face) -> np.ndarray:
    """The pixels inside any of the face's ROI boxes (clipped to the image)."""
    shape = face.image.shape
    region = np.zeros(shape[:2], bool)
    for part in face.parts:
        x, y, w, h = (int(v) for v in part.bbox)
        region[max(y, 0) : max(min(y + h, shape[0]), 0), max(x, 0) : max(min(x + w, shape[1]), 0)] = True
    return region


def hits(probs: np.ndarray, source: int, target: int):
    """Per face: the judge's argmax is the target; and the looser p[target] > p[source]."""
    return probs.argmax(axis=1) == target, probs[:, target] > probs[:, source]


def _above(scores: np.ndarray, cut) -> np.ndarray:
    """1.0 where a geometry score is above the cut, 0.0 at or below, NaN without a score or without a cut."""
    if cut is None:
        return np.full(len(scores), np.nan)
    return np.where(np.isfinite(scores), scores > cut, np.nan)


def _pixel_scores(face, out: np.ndarray, gen, config) -> dict:
    """Pixel-level numbers of one composite (brightness, PSNR, SSIM; outside_changed_px is counted per edit)."""
    raw = out if config.color_match == "none" else face.paste(gen, "none", config.blend)
    region = _box_region(face)
    ssim = ssim_map(face.image, out)
    return {
        "brightness_shift": brightness_shift(face.image, out, *face.support()),
        "brightness_shift_raw": brightness_shift(face.image, raw, *face.support()),
        "psnr_image": psnr(face.image, out),
        "psnr_roi": psnr(face.image, out, region),
        "ssim_image": float(ssim.mean()),
        "ssim_roi": float(ssim[region].mean()),
    }


def judge_faces(judges, images, boxes, config, desc: str) -> dict:
    """Per image: the CNN judge's probabilities on the face square, and the geometry score (NaN without one)."""
    probs = fixed_rows(judge_probs, judges.judge, [face_crop(im, b) for im, b in zip(images, boxes)])
    geometry = np.full(len(images), np.nan)
    if judges.geometry is not None:
        geometry = judges.geometry.scores(tqdm(images, desc=f"{desc}: landmarks", unit="face", leave=False))
    return {"probs": probs, "geometry": geometry}


def _embeddings(faces, composites: dict, judges) -> tuple:
    """(embeddings of the originals, {edit: embeddings of its composites}), from one pool: the originals and each
    edit but the oracle, which pastes another person's feature (its identity is not a ceiling of anything)."""
    embedded = ["comp"] + (["control"] if "control" in composites else [])
    n = len(faces)
    if not judges.identity:
        return [None] * n, {e: [None] * n for e in embedded}
    flat = embed_all(
        [f.image for f in faces] + [im for e in embedded for im in composites[e]],
        [f.face_bbox for f in faces] * (1 + len(embedded)),
        judges.identity_workers,
        "identity",
    )
    return flat[:n], {e: flat[(k + 1) * n : (k + 2) * n] for k, e in enumerate(embedded)}


def _curator_hits(curator, faces, composites, boxes, target: str) -> dict:
    """Per face, whether the curator's argmax is the target on the original and on the composite; {} without one.
    The composite keeps the original's label map: the paste only changes pixels inside the ROI."""
    if curator is None:
        return {}
    maps = [f.label_map for f in faces]
    p_orig, classes = curator([f.image for f in faces], boxes, maps)
    p_comp, _ = curator(composites, boxes, maps)
    if target not in classes:
        raise StageError(f"the curator's classes {classes} lack emotions.target={target!r}; retrain it")
    tgt = classes.index(target)
    return {"orig": p_orig.argmax(axis=1) == tgt, "comp": p_comp.argmax(axis=1) == tgt}


def _edit_columns(edit: str, scored: dict, distances, src: int, tgt: int, cut) -> dict:
    hit, binary = hits(scored["probs"], src, tgt)
    return {
        f"{edit}_hit": hit,
        f"{edit}_bin": binary,
        f"{edit}_p": scored["probs"][:, tgt],
        f"{edit}_geo": scored["geometry"],
        f"{edit}_geo_above": _above(scored["geometry"], cut),
        f"{edit}_id_dist": distances,
        f"{edit}_id_kept": same_person(distances),
    }


def score_batch(faces, edits: dict, judges, config, src: int, tgt: int, target: str) -> BatchScores:
    """Score one batch: `edits` maps comp (the translator), oracle and control to one crop (a tuple of crops with
    several ROIs) per face of `faces`."""
    boxes = [face_box(f.image, f.face_bbox) for f in faces]
    orig = judge_faces(judges, [f.image for f in faces], boxes, config, "originals")
    composites = {
        edit: [f.paste(c, config.color_match, config.blend) for f, c in zip(faces, crops)]
        for edit, crops in edits.items()
    }
    orig_embeddings, edit_embeddings = _embeddings(faces, composites, judges)
    orig_hit, orig_bin = hits(orig["probs"], src, tgt)
    table = {
        "orig_hit": orig_hit,
        "orig_bin": orig_bin,
        "orig_p": orig["probs"][:, tgt],
        "orig_geo": orig["geometry"],
        "orig_geo_above": _above(orig["geometry"], judges.geometry_cut),
    }
    outside, kid_features = {}, {}
    for edit, crops in edits.items():
        scored = judge_faces(judges, composites[edit], boxes, config, edit)
        distances = embedding_distances(orig_embeddings, edit_embeddings.get(edit) or [None] * len(faces))
        table.update(_edit_columns(edit, scored, distances, src, tgt, judges.geometry_cut))
        if edit != "oracle":  # the oracle's crops are real ones: KID and the pixel checks say nothing of them
            outside[edit] = sum(
                outside_changed_px(f.image, out, *f.support()) for f, out in zip(faces, composites[edit])
            )
            if not isinstance(crops[0], tuple):  # an edit of several ROIs: each ROI's own evaluation has its KID
                kid_features[edit] = fixed_rows(features, judges.judge, crops)
    pixels = [_pixel_scores(f, out, gen, config) for f, out, gen in zip(faces, composites["comp"], edits["comp"])]
    return BatchScores(
        table=table,
        agree=orig["probs"][:, src] >= orig["probs"][:, tgt],
        pixels={key: [s[key] for s in pixels] for key in PIXEL_KEYS},
        curator=_curator_hits(judges.curator, faces, composites["comp"], boxes, target),
        embeddings=orig_embeddings,
        features=kid_features,
        outside=outside,
        composites=composites["comp"],
    )
