"""Overlay evaluation of one ROI translator: translate each test face's ROI, paste it back, and score the composites
with judges that share nothing with each other, each number with a 95% interval over the test faces.

Use: stages/evaluate.py streams the test faces past an Evaluation a batch at a time (stages/lib/eval_batch.py
scores a batch); tests call evaluate_faces, the same on faces in memory, with tiny fake generators:
    from stages.lib.eval_faces import Face, translate
    from stages.lib.evaluation import EvalConfig, Evaluation, Judges, evaluate_faces
    judges = Judges(judge=load_judge(), identity=True, geometry=GeometryJudge("mouth"),
                    geometry_cut=fit_threshold(train_a_scores, train_b_scores), curator=classify)
    run = Evaluation(judges, "neutral", "happy", config, sorted_test_ids, n_real, real_crop)  # real_crop(k): crop
    for faces in batches:                                   # [Face(id, image, face_bbox, bbox, crop, alpha), ...]
        run.add(faces, translate(generator, [f.crop for f in faces], device))   # uint8 RGB crops, A->B
    run.add_real_crops(positions, crops); run.add_target_faces(positions, images, face_bboxes)   # domain B
    metrics, picks = run.result()
    metrics, picks = evaluate_faces(faces, generated, judges, "neutral", "happy", real_target_crops, config)

Only per-face numbers are kept between batches (probabilities, scores, distances, the judge features KID needs, the
originals' dlib embeddings, the few sample-sheet faces), and every reduction runs over them in the order given
(the stage: sorted ids), so the numbers do not depend on the batch size or on the order the photos stream in.

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

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .boxes import face_box, face_crop
from .errors import StageError
from .eval_batch import PIXEL_KEYS, fixed_rows, score_batch
from .eval_faces import Picks
from .identity import different_faces_kept_rate
from .intervals import bootstrap
from .judge import features, judge_probs
from .labels import FER_ORDER
from .overlay import color_match
from .quality import kid


@dataclass
class EvalConfig:
    color_match: str = "context"
    blend: str = "alpha"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    n_samples: int = 8
    batch: int = 64  # faces per batch of evaluate_faces (the stage streams its own batches)
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


def oracle_pairs(n_real: int, seed: int) -> np.ndarray:
    """The seeded draw of real target crops for the oracle: the k-th test face (in the evaluation's order) gets crop
    pairs[k % n_real], cycled when there are fewer crops than faces."""
    return np.random.default_rng(seed).permutation(n_real)


def _finite(value):
    return float(value) if value is not None and np.isfinite(value) else None


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


def _ordered(chunks: list, at: list, n: int, what: str) -> np.ndarray:
    """The per-face values of `chunks` (one array per batch; the faces at positions `at`, in the order they came) in
    position order. Every position of range(n) must have come exactly once."""
    if sorted(at) != list(range(n)):
        raise StageError(f"{len(set(at))} distinct of {len(at)} {what} scored, for {n}")
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    return values[np.argsort(np.asarray(at, np.int64), kind="stable")]


class Evaluation:
    """An evaluation fed a batch at a time; result() reduces what the batches left.

    `order`: every test face's id, in the order every reduction runs (bootstrap, means, KID subsets, the sample
    sheet's first faces, the oracle's pairing). `real_crop(k)`: the k-th of the `n_real` real target crops, which
    the oracle pastes (none without it). add_real_crops and add_target_faces take the real target side by its
    positions 0..n_real-1: the crops for KID, the photos for judge_label_agreement.
    """

    def __init__(self, judges: Judges, source: str, target: str, config: EvalConfig, order, n_real=0, real_crop=None):
        if not order:
            raise StageError("no test faces to evaluate")
        self.judges, self.config, self.target = judges, config, target
        self.src, self.tgt = _class_index(source, "source"), _class_index(target, "target")
        self.order, self.n_real, self.real_crop = list(order), n_real, real_crop
        self.position = {face_id: k for k, face_id in enumerate(self.order)}
        if len(self.position) != len(self.order):
            raise StageError(f"{len(self.order) - len(self.position)} test face ids repeat")
        self.pairs = oracle_pairs(n_real, config.seed) if config.oracle and n_real and real_crop else None
        self.at, self.columns, self.embeddings = [], defaultdict(list), []
        self.outside = defaultdict(int)
        self.picks = {}  # position -> (face, generated crop as pasted, composite, p_orig[target], p_comp[target])
        self.real = defaultdict(list)

    def add(self, faces, generated):
        """Score a batch of test faces (in any order) with their translated crops."""
        if len(generated) != len(faces):
            raise StageError(f"{len(generated)} generated crops for {len(faces)} faces")
        at = [self.position[f.id] for f in faces]
        edits = {"comp": list(generated)}
        if self.pairs is not None:
            edits["oracle"] = [self.real_crop(self.pairs[k % self.n_real]) for k in at]
        if self.config.control:
            edits["control"] = [f.own_crops() for f in faces]
        scored = score_batch(faces, edits, self.judges, self.config, self.src, self.tgt, self.target)
        per_face = {
            **scored.table,
            "agree": scored.agree,
            **{f"px_{key}": values for key, values in scored.pixels.items()},
            **{f"cur_{key}": values for key, values in scored.curator.items()},
            **{f"feat_{edit}": values for edit, values in scored.features.items()},
        }
        for name, values in per_face.items():
            self.columns[name].append(np.asarray(values))
        self.at += at
        self.embeddings += scored.embeddings
        for edit, changed in scored.outside.items():
            self.outside[edit] += int(changed)
        for i, (face, k) in enumerate(zip(faces, at)):
            if k < self.config.n_samples:
                matched = tuple(
                    color_match(g, p.crop, p.alpha, self.config.color_match)
                    for g, p in zip(face.split(generated[i]), face.parts)
                )
                p_orig, p_comp = scored.table["orig_p"][i], scored.table["comp_p"][i]
                self.picks[k] = (face, face.join(matched), scored.composites[i], p_orig, p_comp)

    def add_real_crops(self, at, crops):
        """Real target crops at positions `at`: their judge features, for KID (none for tuples of several ROIs)."""
        if len(crops) and not isinstance(crops[0], tuple):
            self.real["features"].append(fixed_rows(features, self.judges.judge, crops))
        self.real["crops_at"] += list(at)

    def add_target_faces(self, at, images, face_bboxes):
        """Real target faces at positions `at`: whether the judge's p[target] > p[source] on them."""
        boxes = [face_box(im, b) for im, b in zip(images, face_bboxes)]
        probs = fixed_rows(judge_probs, self.judges.judge, [face_crop(im, b) for im, b in zip(images, boxes)])
        self.real["agree"].append(probs[:, self.tgt] > probs[:, self.src])
        self.real["faces_at"] += list(at)

    def per_face(self) -> dict:
        """Every per-face number, in the evaluation's order: the bootstrap's columns (orig_*, <edit>_*), agree,
        px_<pixel score>, cur_orig / cur_comp and feat_<edit> (KID's judge features) per test face; target_agree and
        target_features per real target face (positions 0..n_real-1), where they were added."""
        n = len(self.order)
        cols = {name: _ordered(chunks, self.at, n, "test faces") for name, chunks in self.columns.items()}
        if self.real["faces_at"]:
            at = self.real["faces_at"]
            cols["target_agree"] = _ordered(self.real["agree"], at, len(at), "real target faces")
        if self.real["features"]:
            at = self.real["crops_at"]
            cols["target_features"] = _ordered(self.real["features"], at, self.n_real, "real target crops")
        return cols

    def _kid(self, fake, real):
        """KID of generated vs real target crops in the judge's feature space; (None, None) below 2 crops a side."""
        if fake is None or real is None or len(fake) < 2 or len(real) < 2:
            return None, None
        return kid(fake, real, self.config.kid_subsets, self.config.kid_subset_size, self.config.seed)

    def _agreement(self, orig_agree, target_agree) -> dict:
        """Share of real test faces (source and target domain) where the judge's p[target] > p[source] matches the
        domain, with its interval; null without target faces."""
        if target_agree is None:
            return {"judge_label_agreement": None, "judge_label_agreement_ci": None}
        agree = np.concatenate([orig_agree, target_agree])
        stat = {"judge_label_agreement": lambda d: d["a"].mean()}
        ci = bootstrap({"a": agree}, stat, self.config.resamples, self.config.seed)
        return {"judge_label_agreement": float(agree.mean()), "judge_label_agreement_ci": ci["judge_label_agreement"]}

    def _picks(self) -> Picks:
        chosen = [self.picks[k] for k in sorted(self.picks)]
        picks = Picks(rows=[c[:3] for c in chosen], target=self.target)
        picks.p_orig, picks.p_comp = (np.array([c[i] for c in chosen], np.float32) for i in (3, 4))
        return picks

    def result(self):
        """(metrics dict, Picks) over every test face; each must have been added once."""
        cols = self.per_face()
        embeddings = [self.embeddings[i] for i in np.argsort(np.asarray(self.at, np.int64), kind="stable")]
        edits = ["comp"] + (["oracle"] if self.pairs is not None else []) + (["control"] if self.config.control else [])
        metrics, stats = {"n_test": len(self.order), "n_real_target": self.n_real}, {}
        for edit in edits:
            prefix = EDITS[edit]
            stats.update(
                (prefix + name, fn)
                for name, fn in edit_statistics(edit).items()
                if not (edit == "oracle" and name.startswith("identity"))
            )
            if edit != "oracle":  # the oracle's crops are real ones: KID and the pixel checks say nothing of them
                kid_roi = self._kid(cols.get(f"feat_{edit}"), cols.get("target_features"))
                metrics[prefix + "kid_roi"], metrics[prefix + "kid_roi_std"] = kid_roi
                metrics[prefix + "outside_changed_px"] = self.outside[edit]
        if "oracle" in edits:
            stats.update(share_statistics())
        table = {k: v for k, v in cols.items() if k.split("_")[0] in ("orig", *edits)}
        metrics.update(_interval_metrics(table, stats, self.judges, embeddings, self.config))
        for key in PIXEL_KEYS:
            metrics[key] = float(np.mean(cols[f"px_{key}"]))
        rates = (None, None) if "cur_comp" not in cols else (cols["cur_comp"].mean(), cols["cur_orig"].mean())
        metrics["curator_transfer_rate"], metrics["curator_baseline_rate"] = (_finite(r) for r in rates)
        metrics.update(self._agreement(cols["agree"], cols.get("target_agree")))
        return metrics, self._picks()


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
    """The Evaluation of faces in memory, in their order, `config.batch` at a time; returns (metrics dict, Picks).

    `real_target_crops` are the domain-B test crops KID compares with and the oracle pastes; `real_target_faces`,
    (image, face box) of the same faces, give judge_label_agreement.
    """
    if len(generated) != len(faces):
        raise StageError(f"{len(generated)} generated crops for {len(faces)} faces")
    real = list(real_target_crops)
    run = Evaluation(judges, source, target, config, [f.id for f in faces], len(real), real.__getitem__)
    for start in range(0, len(faces), config.batch):
        run.add(faces[start : start + config.batch], generated[start : start + config.batch])
    run.add_real_crops(range(len(real)), real)
    if real_target_faces:
        images, boxes = zip(*real_target_faces)
        run.add_target_faces(range(len(images)), images, boxes)
    return run.result()
