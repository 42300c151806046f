"""Overlay evaluation of one ROI translator: translate each test face's ROI, paste it back, and score the composites
with judges that share nothing with each other, each number with a 95% interval over the test faces.

Use (stages/evaluate.py reads the tables and calls this; tests call it with tiny fake generators):
    from stages.lib.eval_faces import Face, translate
    from stages.lib.evaluation import EvalConfig, Judges, evaluate_faces
    faces = [Face(id, image, face_bbox, bbox, crop, alpha, label_map), ...]  # domain A, split test, kept
    generated = translate(generator, [f.crop for f in faces], device)  # uint8 RGB crops, generator A->B
    judges = Judges(judge=load_judge(), identity=True, geometry=GeometryJudge("mouth"),
                    geometry_cut=fit_threshold(train_a_scores, train_b_scores), curator=classify)
    metrics, picks = evaluate_faces(faces, generated, judges, "neutral", "happy", real_target_crops, config)

What is measured, and why each number is defined so (every `<name>_ci` is a paired percentile bootstrap over the
test faces, `config.resamples` draws, seeded; `n_test` faces):
- transfer_rate (headline): share of composites whose CNN-judge argmax over all 7 FER classes is the target: the
  edit must beat every other emotion, not only the source. transfer_rate_binary (p[target] > p[source]) is the looser
  reading. Both are also given for the unedited originals (baseline_rate*), with the difference (transfer_gain*).
- target_prob_gain: mean of p_composite[target] - p_original[target], a graded version of the same.
- identity_distance / identity_kept_rate: dlib's 128-d embedding of the original vs the composite, from the parser's
  face box (stages/lib/identity.py): the mean distance and the share below dlib's same-person 0.6. identity_embedded
  counts the faces with a box (the others are left out of both).
- geometry_gain / geometry_transfer_rate: the landmark judge (stages/lib/geometry.py), FaceMesh re-detected on each
  composite: mean change of the ROI's score, and the share of composites above the cut fitted on real train faces
  of both domains (geometry_cut; geometry_baseline_rate on the originals). geometry_detected: faces FaceMesh found on
  both the original and the composite (the others are left out).
- oracle_*: the ceiling of an ROI edit. Each source face gets a *real* target-domain crop of another test face
  (seeded pairing), pasted through the same alpha with the same colour matching and scored by the same judges:
  oracle_transfer_gain, oracle_target_prob_gain, oracle_geometry_gain. transfer_share and geometry_share are the
  translator's gain over the oracle's (per bootstrap draw for the interval), null unless the oracle's own gain is
  above 0 at 95% (a share of a ceiling that may be 0 means nothing). The oracle pastes another person's
  feature, so its identity is not measured.
- control_*: the same numbers for the identity generator (each face's own crop, resampled and pasted back): its
  gains' intervals should contain 0 and its identity_kept_rate be 1.
- identity_different_faces_kept_rate: share of pairs of different test faces that dlib calls one person; near 0.01
  on real photos, near 1 on the drawn demo faces, where identity_kept_rate therefore says nothing.
- judge_label_agreement: on the real test faces of both domains, the share where the CNN judge's
  p[target] > p[source] agrees with the domain. The default curator reads the judge's features, so curation keeps
  faces this judge agrees with; this number shows how much (it is near 1 when the test set was pre-selected for it).
- curator_*: the share of composites (and of originals) whose argmax is the target for train_curator's final curator,
  which is fitted on the train split only, so no test face was seen by it (secondary: it learnt this data's labels).
  It reads the same face box; a grey_masks curator gets the original's parsed label map for the composite too, since
  the paste changes pixels only inside the ROI. Null when no curator is given.
- outside_changed_px: pixels outside the alpha's support that differ from the original; must be 0.
- psnr/ssim _image and _roi: composite vs original, over the whole image and over the ROI box (clipped to the
  image). They measure how much was changed, not whether the change is good.
- kid_roi: KID between the generator's raw A->B crops and real domain-B test crops, in the judge's penultimate
  feature space. It rewards crops that look like real target crops in that space, not an edit that keeps the face;
  the stage also reports it for the identity generator (control_kid_roi) so the two can be read side by side.
- brightness_shift: mean over faces of |alpha-weighted mean luma of composite - of original| inside the paste mask,
  with the configured colour matching; brightness_shift_raw the same without colour matching.
"""

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .boxes import face_box, face_crop
from .errors import StageError
from .eval_faces import Face, Picks
from .identity import different_faces_kept_rate, embed_all, embedding_distances, same_person
from .intervals import bootstrap
from .judge import features, judge_probs
from .labels import FER_ORDER
from .overlay import brightness_shift, color_match, outside_changed_px
from .quality import kid, psnr, ssim_map


@dataclass
class EvalConfig:
    color_match: str = "context"
    blend: str = "alpha"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    n_samples: int = 8
    judge_batch: int = 256
    resamples: int = 1000  # bootstrap draws for every _ci
    oracle: bool = True  # also paste real target crops of other test faces (the ceiling)
    control: bool = True  # also score the identity generator (each face's own crop)


@dataclass
class Judges:
    """What scores a composite. judge: the CNN judge (required); the rest are optional and their metrics are null
    without them. curator: callable (whole images, face boxes, label maps) -> (probs (N, C), classes)."""

    judge: object
    identity: bool = False  # dlib identity distances (stages/lib/identity.py)
    identity_workers: int = 1
    geometry: object = None
    geometry_cut: float = None
    curator: object = None


def _class_index(emotion: str, role: str) -> int:
    if emotion not in FER_ORDER:
        raise StageError(f"the judge knows only {', '.join(FER_ORDER)}; emotions.{role}={emotion!r} cannot be judged")
    return FER_ORDER.index(emotion)


def _box_region(face: Face) -> np.ndarray:
    """The pixels inside any of the face's ROI boxes (clipped to the image)."""
    shape = face.image.shape
    region = np.zeros(shape[:2], bool)
    for part in face.parts:
        x, y, w, h = (int(v) for v in part.bbox)
        region[max(y, 0) : max(min(y + h, shape[0]), 0), max(x, 0) : max(min(x + w, shape[1]), 0)] = True
    return region


def _hits(probs: np.ndarray, source: int, target: int):
    """Per face: the judge's argmax is the target; and the looser p[target] > p[source]."""
    return probs.argmax(axis=1) == target, probs[:, target] > probs[:, source]


def _above(scores: np.ndarray, cut) -> np.ndarray:
    """1.0 where a geometry score is above the cut, 0.0 at or below, NaN without a score or without a cut."""
    if cut is None:
        return np.full(len(scores), np.nan)
    return np.where(np.isfinite(scores), scores > cut, np.nan)


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _ratio(num: float, den: float) -> float:
    return num / den if np.isfinite(num) and np.isfinite(den) and den > 0 else float("nan")


# Edits scored side by side on the same faces: the translator, the oracle (real target crops of other test faces,
# pasted the same way) and the control (the identity generator: each face's own crop). Their metric name prefixes:
EDITS = {"comp": "", "oracle": "oracle_", "control": "control_"}


def edit_statistics(edit: str) -> dict:
    """The statistics with intervals of one edit, each a function of one bootstrap sample of the per-face arrays."""
    return {
        "transfer_rate": lambda d: d[f"{edit}_hit"].mean(),
        "transfer_gain": lambda d: (d[f"{edit}_hit"] - d["orig_hit"]).mean(),
        "transfer_gain_binary": lambda d: (d[f"{edit}_bin"] - d["orig_bin"]).mean(),
        "target_prob_gain": lambda d: (d[f"{edit}_p"] - d["orig_p"]).mean(),
        "identity_kept_rate": lambda d: _nanmean(d[f"{edit}_id_kept"]),
        "identity_distance": lambda d: _nanmean(d[f"{edit}_id_dist"]),
        "geometry_gain": lambda d: _nanmean(d[f"{edit}_geo"] - d["orig_geo"]),
        "geometry_transfer_rate": lambda d: _nanmean(d[f"{edit}_geo_above"]),
    }


def share_statistics() -> dict:
    """The translator's gain over the oracle's, per draw."""
    comp, oracle = edit_statistics("comp"), edit_statistics("oracle")
    return {
        f"{name.split('_')[0]}_share": (lambda d, n=name: _ratio(comp[n](d), oracle[n](d)))
        for name in ("transfer_gain", "geometry_gain")
    }


def _pixel_scores(face: Face, out: np.ndarray, gen, config: EvalConfig) -> dict:
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


def _paste(faces, crops, config: EvalConfig, desc: str) -> list:
    return [
        f.paste(c, config.color_match, config.blend)
        for f, c in zip(tqdm(faces, desc=desc, unit="face", leave=False), crops)
    ]


def _judge_images(images, boxes, judges: Judges, config: EvalConfig, desc: str) -> dict:
    """Per image: the CNN judge's probabilities on the face square, and the geometry score (NaN without one)."""
    probs = judge_probs(judges.judge, [face_crop(im, b) for im, b in zip(images, boxes)], config.judge_batch)
    geometry = np.full(len(images), np.nan)
    if judges.geometry is not None:
        geometry = judges.geometry.scores(tqdm(images, desc=f"{desc}: landmarks", unit="face", leave=False))
    return {"probs": probs, "geometry": geometry}


def _embeddings(judges: Judges, images, face_bboxes, desc: str) -> list:
    """dlib embeddings from the parser's boxes (None without a box, or when identity is off)."""
    if not judges.identity:
        return [None] * len(images)
    return embed_all(images, face_bboxes, judges.identity_workers, desc)


def _kid(generated, real_target_crops, judge, config: EvalConfig):
    """KID of generated vs real target crops in the judge's feature space; (None, None) below 2 crops a side, and
    for an edit of several ROIs (each ROI's own evaluation has its KID)."""
    if len(generated) < 2 or len(real_target_crops) < 2 or isinstance(generated[0], tuple):
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


def oracle_crops(n_faces: int, real_target_crops, seed: int) -> list:
    """One real target crop per source face, drawn by a seeded permutation (cycled when there are fewer)."""
    order = np.random.default_rng(seed).permutation(len(real_target_crops))
    return [real_target_crops[order[i % len(order)]] for i in range(n_faces)]


def _finite(value):
    return float(value) if value is not None and np.isfinite(value) else None


def _judge_label_agreement(orig_probs, target_faces, judges, config, src, tgt) -> dict:
    """Share of real test faces (source and target domain) where the judge's p[target] > p[source] matches the
    domain, with its interval; null without target faces."""
    if not target_faces:
        return {"judge_label_agreement": None, "judge_label_agreement_ci": None}
    images = [im for im, _ in target_faces]
    boxes = [face_box(im, b) for im, b in target_faces]
    probs_b = judge_probs(judges.judge, [face_crop(im, b) for im, b in zip(images, boxes)], config.judge_batch)
    agree = np.concatenate([orig_probs[:, src] >= orig_probs[:, tgt], probs_b[:, tgt] > probs_b[:, src]])
    ci = bootstrap({"a": agree}, {"judge_label_agreement": lambda d: d["a"].mean()}, config.resamples, config.seed)
    return {"judge_label_agreement": float(agree.mean()), "judge_label_agreement_ci": ci["judge_label_agreement"]}


def _edits(faces, generated, real_target_crops, config: EvalConfig) -> dict:
    """The crops of every edit scored: the translator's, the oracle's and the control's."""
    edits = {"comp": generated}
    if config.oracle and len(real_target_crops):
        edits["oracle"] = oracle_crops(len(faces), real_target_crops, config.seed)
    if config.control:
        edits["control"] = [f.own_crops() for f in faces]
    return edits


def _identity_embeddings(faces, composites: dict, judges: Judges):
    """(embeddings of the originals, {edit: embeddings of its composites}), from one pool: the originals and each
    edit but the oracle, which pastes another person's feature (its identity is not a ceiling of anything)."""
    embedded = ["comp"] + (["control"] if "control" in composites else [])
    face_bboxes = [f.face_bbox for f in faces]
    flat = _embeddings(
        judges,
        [f.image for f in faces] + [im for e in embedded for im in composites[e]],
        face_bboxes * (1 + len(embedded)),
        "identity",
    )
    n = len(faces)
    return flat[:n], {e: flat[(k + 1) * n : (k + 2) * n] for k, e in enumerate(embedded)}


def _score_edit(edit, crops, faces, composites, boxes, judges, config, ids, real_target_crops):
    """(per-face arrays, statistics, plain metrics) of one edit. `ids`: (source, target class, original
    embeddings, this edit's embeddings)."""
    src, tgt, orig_embeddings, edit_embeddings = ids
    prefix = EDITS[edit]
    scored = _judge_images(composites, boxes, judges, config, edit)
    dist = embedding_distances(orig_embeddings, edit_embeddings or [None] * len(faces))
    hit, binary = _hits(scored["probs"], src, tgt)
    per_face = {
        f"{edit}_hit": hit,
        f"{edit}_bin": binary,
        f"{edit}_p": scored["probs"][:, tgt],
        f"{edit}_geo": scored["geometry"],
        f"{edit}_geo_above": _above(scored["geometry"], judges.geometry_cut),
        f"{edit}_id_dist": dist,
        f"{edit}_id_kept": same_person(dist),
    }
    stats = {
        prefix + name: fn
        for name, fn in edit_statistics(edit).items()
        if not (edit == "oracle" and name.startswith("identity"))
    }
    metrics = {}
    if edit != "oracle":  # the oracle's crops are real ones: KID and the pixel checks say nothing of them
        metrics[prefix + "kid_roi"], metrics[prefix + "kid_roi_std"] = _kid(
            crops, real_target_crops, judges.judge, config
        )
        metrics[prefix + "outside_changed_px"] = int(
            sum(outside_changed_px(f.image, out, *f.support()) for f, out in zip(faces, composites))
        )
    return per_face, stats, metrics


def _interval_metrics(per_face: dict, stats: dict, judges: Judges, orig_embeddings, config: EvalConfig) -> dict:
    """Every statistic with its interval, the shares only where the oracle's gain is above 0 at 95%."""
    per_face = {k: np.asarray(v, np.float64) for k, v in per_face.items()}
    cis = bootstrap(per_face, stats, config.resamples, config.seed)
    metrics = {
        "baseline_rate": float(per_face["orig_hit"].mean()),
        "transfer_rate_binary": float(per_face["comp_bin"].mean()),
        "baseline_rate_binary": float(per_face["orig_bin"].mean()),
        "identity_embedded": int(np.isfinite(per_face["comp_id_dist"]).sum()),
        "identity_different_faces_kept_rate": different_faces_kept_rate(orig_embeddings),
        "geometry_detected": int((np.isfinite(per_face["orig_geo"]) & np.isfinite(per_face["comp_geo"])).sum()),
        "geometry_cut": _finite(judges.geometry_cut),
        "geometry_baseline_rate": _finite(_nanmean(per_face["orig_geo_above"])),
    }
    for name, fn in stats.items():
        metrics[name] = _finite(fn(per_face))
        metrics[f"{name}_ci"] = cis[name] if metrics[name] is not None else None
    for share, gain in (("transfer_share", "oracle_transfer_gain"), ("geometry_share", "oracle_geometry_gain")):
        # A share of a ceiling that may be 0 is no number: only where the oracle's gain is above 0 at 95%.
        if share in metrics and not (metrics[f"{gain}_ci"] and metrics[f"{gain}_ci"][0] > 0):
            metrics[share] = metrics[f"{share}_ci"] = None
    return metrics


def _picks(faces, generated, composites, orig_probs, comp_p, tgt, target, config: EvalConfig) -> Picks:
    picks = Picks(target=target)
    for face, gen, out in list(zip(faces, generated, composites))[: config.n_samples]:
        matched = tuple(
            color_match(g, p.crop, p.alpha, config.color_match) for g, p in zip(face.split(gen), face.parts)
        )
        picks.rows.append((face, face.join(matched), out))
    picks.p_orig, picks.p_comp = orig_probs[: len(picks.rows), tgt], comp_p[: len(picks.rows)]
    return picks


def evaluate_faces(
    faces,
    generated,
    judges: Judges,
    source: str,
    target: str,
    real_target_crops,
    config: EvalConfig,
    real_target_faces=None,
):
    """Composite every face and score the composites against the originals; returns (metrics dict, Picks).

    `real_target_crops` are the domain-B test crops KID compares with and the oracle pastes; `real_target_faces`,
    (image, face box) of the same faces, give judge_label_agreement.
    """
    if not faces:
        raise StageError("no test faces to evaluate")
    if len(generated) != len(faces):
        raise StageError(f"{len(generated)} generated crops for {len(faces)} faces")
    src, tgt = _class_index(source, "source"), _class_index(target, "target")
    boxes = [face_box(f.image, f.face_bbox) for f in faces]
    edits = _edits(faces, generated, real_target_crops, config)
    orig = _judge_images([f.image for f in faces], boxes, judges, config, "originals")
    composites = {edit: _paste(faces, crops, config, edit) for edit, crops in edits.items()}
    orig_embeddings, edit_embeddings = _identity_embeddings(faces, composites, judges)
    orig_hit, orig_bin = _hits(orig["probs"], src, tgt)
    per_face = {
        "orig_hit": orig_hit,
        "orig_bin": orig_bin,
        "orig_p": orig["probs"][:, tgt],
        "orig_geo": orig["geometry"],
        "orig_geo_above": _above(orig["geometry"], judges.geometry_cut),
    }
    metrics = {"n_test": len(faces), "n_real_target": len(real_target_crops)}
    stats = {}
    for edit, crops in edits.items():
        ids = (src, tgt, orig_embeddings, edit_embeddings.get(edit))
        edit_face, edit_stats, edit_metrics = _score_edit(
            edit, crops, faces, composites[edit], boxes, judges, config, ids, real_target_crops
        )
        per_face.update(edit_face)
        stats.update(edit_stats)
        metrics.update(edit_metrics)
    if "oracle" in edits:
        stats.update(share_statistics())
    metrics.update(_interval_metrics(per_face, stats, judges, orig_embeddings, config))
    pixels = [_pixel_scores(f, out, gen, config) for f, out, gen in zip(faces, composites["comp"], generated)]
    for key in ("brightness_shift", "brightness_shift_raw", "psnr_image", "psnr_roi", "ssim_image", "ssim_roi"):
        metrics[key] = float(np.mean([s[key] for s in pixels]))
    metrics.update(_curator_rates(judges.curator, faces, composites["comp"], boxes, target))
    metrics.update(_judge_label_agreement(orig["probs"], real_target_faces, judges, config, src, tgt))
    picks = _picks(faces, generated, composites["comp"], orig["probs"], per_face["comp_p"], tgt, target, config)
    return metrics, picks
