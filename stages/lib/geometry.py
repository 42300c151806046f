"""The geometry judge: an expression score from FaceMesh landmarks, independent of every CNN in the project.

The CNN judge (mini-Xception) and the default curator share features, so a second opinion must share nothing with
them. This one re-detects the 478 FaceMesh landmarks on the image it scores and measures the face's shape:

    from stages.lib.geometry import GeometryJudge, fit_threshold
    judge = GeometryJudge("mouth")                  # mouth and face: smile width; eyes: eye narrowing
    scores = judge.scores(images)                   # (N,) float, NaN where FaceMesh finds no face
    cut = fit_threshold(scores_source, scores_target)   # the midpoint that best separates real train faces
    crossed = scores > cut

Scores (all lengths over the inter-ocular distance, so they do not depend on the image's scale):
- mouth, face: `mouth_width` (corner to corner) plus `corner_lift` (how far the corners sit above the lips'
  centre line, measured perpendicular to the eye line). A smile widens the mouth and lifts its corners.
- eyes: minus the eye aperture (lid gap over eye width, mean of both eyes): smiling cheeks narrow the eyes.
bench/judges.py measures each score's neutral-vs-happy AUC on the real photos (the README quotes it).
"""

import numpy as np

# MediaPipe FaceMesh landmark ids (canonical face model, subject's right eye first).
MOUTH_CORNERS = (61, 291)
LIP_CENTRE = (13, 14)  # inner upper and lower lip, on the midline
EYE_CORNERS = {"right": (33, 133), "left": (362, 263)}
EYE_LIDS = {"right": (159, 145), "left": (386, 374)}
OUTER_EYE_CORNERS = (33, 263)  # inter-ocular distance: outer corner to outer corner

SCORES = {"mouth": "smile", "face": "smile", "eyes": "eye_narrowing"}


def expression_features(points: np.ndarray) -> dict:
    """Scale-free shape measures of one face from its (478, 2) landmark pixels."""
    p = np.asarray(points, np.float64)
    eye_r, eye_l = p[OUTER_EYE_CORNERS[0]], p[OUTER_EYE_CORNERS[1]]
    axis = eye_l - eye_r
    iod = float(np.hypot(*axis))
    if not iod > 0:
        return {"mouth_width": np.nan, "corner_lift": np.nan, "eye_aperture": np.nan}
    across = axis / iod
    down = np.array([-across[1], across[0]])  # perpendicular to the eye line, pointing to the chin
    corners = p[list(MOUTH_CORNERS)]
    centre = p[list(LIP_CENTRE)].mean(axis=0)
    lift = float(np.mean((centre - corners) @ down))
    apertures = []
    for side in ("right", "left"):
        a, b = p[EYE_CORNERS[side][0]], p[EYE_CORNERS[side][1]]
        top, bottom = p[EYE_LIDS[side][0]], p[EYE_LIDS[side][1]]
        width = float(np.hypot(*(b - a)))
        apertures.append(float(np.hypot(*(bottom - top))) / width if width > 0 else np.nan)
    return {
        "mouth_width": float(np.hypot(*(corners[1] - corners[0]))) / iod,
        "corner_lift": lift / iod,
        "eye_aperture": float(np.mean(apertures)),
    }


def expression_score(features: dict, kind: str) -> float:
    """One number per face that grows with the target expression (a smile) for `kind` in SCORES' values."""
    if kind == "smile":
        return features["mouth_width"] + features["corner_lift"]
    if kind == "eye_narrowing":
        return -features["eye_aperture"]
    raise ValueError(f"unknown geometry score {kind!r}; known: {', '.join(sorted(set(SCORES.values())))}")


class GeometryJudge:
    """FaceMesh (no visibility check: only the landmarks) and the ROI's score. One instance is one MediaPipe graph;
    close() releases it."""

    def __init__(self, roi: str, min_detect_size: int = 192):
        from .parsing.facemesh import FaceMeshParser

        if roi not in SCORES:
            raise ValueError(f"no geometry score for ROI {roi!r}; known: {', '.join(SCORES)}")
        self.kind = SCORES[roi]
        self.parser = FaceMeshParser(min_detect_size=min_detect_size, visibility=None)

    def features(self, image: np.ndarray):
        """expression_features of the image's face, or None when FaceMesh finds none."""
        rgb, _ = self.parser.detection_input(image)
        pts = self.parser.landmarks(rgb)
        if pts is None:
            return None
        return expression_features(pts * [image.shape[1], image.shape[0]])

    def scores(self, images) -> np.ndarray:
        out = np.full(len(images), np.nan)
        for i, image in enumerate(images):
            feats = self.features(image)
            if feats is not None:
                out[i] = expression_score(feats, self.kind)
        return out

    def close(self):
        self.parser.close()


def fit_threshold(source_scores, target_scores) -> float:
    """The cut between two score samples (NaNs ignored) with the best balanced accuracy, target above it; the midpoint
    between neighbouring sorted scores, so it never equals an observed score."""
    a = np.sort(np.asarray(source_scores, np.float64)[np.isfinite(source_scores)])
    b = np.sort(np.asarray(target_scores, np.float64)[np.isfinite(target_scores)])
    if not len(a) or not len(b):
        raise ValueError("fit_threshold needs finite scores on both sides")
    values = np.unique(np.concatenate([a, b]))
    cuts = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    specificity = np.searchsorted(a, cuts, side="right") / len(a)  # source at or below the cut
    sensitivity = 1 - np.searchsorted(b, cuts, side="right") / len(b)  # target above it
    return float(cuts[np.argmax(specificity + sensitivity)])


def auc(source_scores, target_scores) -> float:
    """Probability that a random target face scores above a random source face (ties count half); NaNs ignored."""
    from sklearn.metrics import roc_auc_score

    a = np.asarray(source_scores, np.float64)
    b = np.asarray(target_scores, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))
