"""Label issues: which given labels the classifier disputes, and the out-of-fold table that carries its verdicts
from train_curator to filter_emotion.

    classes = curator_classes("neutral", "happy", labels)     # ["neutral", "happy", "other"]
    y = class_index(labels, classes)
    issues = find_issues(y, probs)                             # bool (N,), cleanlab.filter.find_label_issues
    kept, reasons, given_prob = decide(labels, classes, probs, issues, "neutral", "happy", 0.5, label_other="keep")
    label_sources, label_probs = label_provenance(ids, "data/images")   # `given`, or `judge` with its probability
    kept, reasons = pseudo_rule(reasons, labels, label_sources, label_probs, "neutral", "happy", 0.5)

Why three classes: filter_emotion needs P(source) and P(target). Faces labelled with any other emotion are merged into
one `other` class instead of being dropped, so the classifier still learns what is neither (a sad face labelled
neutral gets low P(neutral)) and every input row gets probabilities.
"""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from .boxes import face_box, face_crop
from .codec import decode_image, to_grey
from .errors import StageError
from .labels import FER_ORDER
from .tables import iter_faces, iter_rows_of, kept_summary, read_table, write_bytes_atomic

OTHER = "other"
# filter_emotion's reject reasons, in the order its rules apply (decide). A disputed label is `label_issue` when the
# classifier reads the other of source and target, `label_other` when it reads neither (talking, stern or surprised
# faces labelled neutral often land there, #14): both are rejected, but a user can tell them apart. A judge
# pseudo-label (ingest.source: image_folder) of source or target below filter_emotion.min_pseudo_confidence is
# `pseudo_low_confidence` before any of the classifier's rules (pseudo_rule).
REASONS = ("other_emotion", "pseudo_low_confidence", "label_issue", "label_other", "low_confidence")


def curator_classes(source: str, target: str, labels) -> list:
    """[source, target] plus `other` when some label is neither."""
    classes = [source, target]
    if any(label not in classes for label in labels):
        classes.append(OTHER)
    return classes


def class_index(labels, classes) -> np.ndarray:
    """Each label's index in `classes`; labels outside them map to `other`."""
    lookup = {c: i for i, c in enumerate(classes)}
    other = lookup.get(OTHER, -1)
    idx = np.asarray([lookup.get(label, other) for label in labels], np.int64)
    if (idx < 0).any():
        raise ValueError("a label is neither source, target nor other")
    return idx


# cleanlab's `filter_by` methods. Its default, prune_by_noise_rate, prunes as many rows as the confident joint
# estimates to be noisy; on the demo that estimate came out low (recall 0.70 of the injected noise at precision 1.0)
# while predicted_neq_given found it all (recall 1.0, precision 0.97), so that is our default.
ISSUE_FILTERS = ("predicted_neq_given", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


def find_issues(y: np.ndarray, probs: np.ndarray, filter_by: str = ISSUE_FILTERS[0]) -> np.ndarray:
    """Confident learning: cleanlab's find_label_issues on out-of-sample probabilities -> bool (N,).

    cleanlab needs at least one example of every class it is given, so classes without a member are dropped (and the
    probabilities renormalised) before it runs.
    """
    from cleanlab.filter import find_label_issues

    present = np.flatnonzero(np.bincount(y, minlength=probs.shape[1]) > 0)
    if len(present) < 2 or len(y) < 2:
        return np.zeros(len(y), bool)
    remap = np.full(probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    sub = probs[:, present].astype(np.float64)
    sub /= np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    return np.asarray(find_label_issues(remap[y], sub, filter_by=filter_by), bool)


def oof_table(ids, labels, classes, y, folds, probs, issues, source, target) -> pa.Table:
    pred = probs.argmax(axis=1)
    schema_meta = {b"classes": json.dumps(classes).encode()}
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.string()),
            "given": pa.array([classes[k] for k in y], pa.string()),
            "fold": pa.array(folds, pa.int32()),
            "classes": pa.array([classes] * len(ids), pa.list_(pa.string())),
            "probs": pa.array(list(probs.astype(np.float32)), pa.list_(pa.float32())),
            "p_source": pa.array(probs[:, classes.index(source)], pa.float32()),
            "p_target": pa.array(probs[:, classes.index(target)], pa.float32()),
            "predicted": pa.array([classes[k] for k in pred], pa.string()),
            "given_prob": pa.array(probs[np.arange(len(y)), y], pa.float32()),
            "label_issue": pa.array(issues, pa.bool_()),
        }
    ).replace_schema_metadata(schema_meta)


def curator_verdicts(ids, source, target, path):
    """(labels, classes, probs (N, K), label_issue (N,)) from train_curator's out-of-fold table, in `ids` order."""
    try:
        table = read_table(path)
    except FileNotFoundError:
        raise StageError(f"{path} not found; run train_curator first (dvc repro train_curator)") from None
    meta = table.schema.metadata or {}
    classes = json.loads(meta.get(b"classes", b"[]"))
    if classes[:2] != [source, target]:
        raise StageError(f"{path} was trained for classes {classes}, not {source}/{target}; rerun train_curator")
    rows = {r["id"]: r for r in table.select(["id", "label", "probs", "label_issue"]).to_pylist()}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise StageError(
            f"{path} lacks {len(missing)} of filter_masks' kept ids (e.g. {missing[0]}); rerun train_curator"
        )
    labels = [rows[i]["label"] for i in ids]
    probs = np.asarray([rows[i]["probs"] for i in ids], np.float64).reshape(len(ids), len(classes))
    return labels, classes, probs, np.asarray([rows[i]["label_issue"] for i in ids], bool)


def judge_to_classes(fer_probs: np.ndarray, classes) -> np.ndarray:
    """Fold the judge's 7 FER probabilities into the curator's classes: source, target, and other = the rest."""
    out = np.zeros((len(fer_probs), len(classes)))
    named = [FER_ORDER.index(c) for c in classes if c != OTHER]
    out[:, : len(named)] = fer_probs[:, named]
    if OTHER in classes:
        out[:, classes.index(OTHER)] = 1.0 - fer_probs[:, named].sum(axis=1)
    return out / np.clip(out.sum(axis=1, keepdims=True), 1e-12, None)


# What filter_emotion does with a face whose given label is source or target but which the classifier reads as
# neither (its top class is `other`): reject it as label_other, or keep it under its given label when the classifier
# still prefers that label to the other of source and target (a talking "neutral" is no smile).
LABEL_OTHER = ("reject", "keep")


def decide(labels, classes, probs, issues, source, target, min_confidence, label_other="reject"):
    """(kept, reasons, given_prob) by the rules in filter_emotion's docstring."""
    y = class_index(labels, classes)
    given_prob = probs[np.arange(len(y)), y]
    top = [classes[k] for k in probs.argmax(axis=1)] if len(y) else []
    pair = {source: classes.index(target), target: classes.index(source)}
    reasons = []
    for label, issue, conf, read, row in zip(labels, issues, given_prob, top, probs):
        reads_other = read not in (source, target)
        if label not in (source, target):
            reasons.append("other_emotion")
        elif reads_other and label_other == "keep" and conf > row[pair[label]]:
            reasons.append("")
        elif issue:
            reasons.append("label_other" if reads_other else "label_issue")
        elif conf < min_confidence:
            reasons.append("low_confidence")
        else:
            reasons.append("")
    return np.asarray([r == "" for r in reasons]), reasons, given_prob


def pseudo_rule(reasons, labels, label_sources, label_probs, source, target, min_pseudo_confidence):
    """(kept, reasons) once the pseudo-label rule has spoken: a `judge` label of source or target whose probability is
    below `min_pseudo_confidence` is rejected as pseudo_low_confidence, whatever decide() found. Given labels, and
    pseudo-labels that are neither source nor target (other_emotion), keep decide()'s reason."""
    out = [
        "pseudo_low_confidence"
        if kind == "judge" and label in (source, target) and (prob is None or prob < min_pseudo_confidence)
        else reason
        for reason, label, kind, prob in zip(reasons, labels, label_sources, label_probs)
    ]
    return np.asarray([r == "" for r in out], bool), out


def label_provenance(ids, images_path) -> tuple:
    """(label_source, label_prob) of each id, in `ids` order, from the images table (ingest)."""
    got = {}
    for rows in iter_rows_of(images_path, ids, ["id", "label_source", "label_prob"], "ingest"):
        got.update((r["id"], (r["label_source"], r["label_prob"])) for r in rows)
    missing = [i for i in ids if i not in got]
    if missing:
        raise StageError(f"{images_path} lacks {len(missing)} of filter_masks' kept ids (e.g. {missing[0]}); rerun")
    return [got[i][0] for i in ids], [got[i][1] for i in ids]


def verdict_table(ids, labels, classes, probs, issues, kept, reasons, given_prob, p, provenance) -> pa.Table:
    """filter_emotion's output table (its schema is in the stage's docstring); `provenance` is label_provenance's."""
    domain = {p["source"]: "A", p["target"]: "B"}
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "kept": pa.array(kept, pa.bool_()),
            "reason": pa.array(reasons, pa.string()),
            "label": pa.array(labels, pa.string()),
            "label_source": pa.array(provenance[0], pa.string()),
            "label_prob": pa.array(provenance[1], pa.float32()),
            "domain": pa.array([domain[lab] if k else None for lab, k in zip(labels, kept)], pa.string()),
            "classifier": pa.array([p["classifier"]] * len(ids), pa.string()),
            "p_source": pa.array(probs[:, 0], pa.float32()),
            "p_target": pa.array(probs[:, 1], pa.float32()),
            "given_prob": pa.array(given_prob, pa.float32()),
            "predicted": pa.array([classes[k] for k in probs.argmax(axis=1)] if len(ids) else [], pa.string()),
            "label_issue": pa.array(issues, pa.bool_()),
        }
    )


def verdict_summary(table: pa.Table, classifier) -> dict:
    """metrics/filter_emotion.json."""
    counts, reasons = kept_summary(table)
    per_domain = Counter(d for d in table.column("domain").to_pylist() if d)
    read_other = sum(
        k and p == OTHER for k, p in zip(table.column("kept").to_pylist(), table.column("predicted").to_pylist())
    )
    return {**counts, "classifier": classifier, "by_reason": {r: reasons.count(r) for r in REASONS},
            "kept_per_domain": dict(sorted(per_domain.items())), "kept_read_other": read_other}  # fmt: skip


def write_confusion(table: pa.Table, classes, path):
    """Given class vs the classifier's argmax class, one row per input face, for DVC's `confusion` template."""
    given = [classes[k] for k in class_index(table.column("label").to_pylist(), classes)]
    rows = pa.table(
        {"id": table.column("id"), "given": pa.array(given, pa.string()), "predicted": table.column("predicted")}
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(rows, sink)
    write_bytes_atomic(sink.getvalue().to_pybytes(), path)


def grey_face_squares(ids, faces, desc=None) -> list:
    """The judge's grey face square of each id (the whole image where the parser found no face)."""
    out = []
    for i in tqdm(ids, desc=desc, unit="face", disable=desc is None):
        grey = to_grey(decode_image(faces[i]["image"]))
        out.append(face_crop(grey, face_box(grey, faces[i].get("face_bbox"))))
    return out


def judge_verdicts(ids, source, target, device, issue_filter):
    """(labels, classes, probs, label_issue) from the pretrained judge on face crops, cleanlab on its probabilities.
    The faces stream past a row group at a time; only their labels and 7 probabilities are kept."""
    from .judge import STREAM_BATCH, judge_probs, load_judge

    judge, got = load_judge(device=device), {}
    with tqdm(total=len(ids), desc="judge", unit="face") as bar:
        for rows in iter_faces(ids, ["label", "image"], ["face_bbox"], batch_rows=STREAM_BATCH):
            faces = {r["id"]: r for r in rows}
            fer_probs = judge_probs(judge, grey_face_squares(list(faces), faces))
            got.update((i, (faces[i]["label"], p)) for i, p in zip(faces, fer_probs))
            bar.update(len(rows))
    labels = [got[i][0] for i in ids]
    classes = curator_classes(source, target, labels)
    probs = judge_to_classes(np.array([got[i][1] for i in ids]).reshape(len(ids), len(FER_ORDER)), classes)
    return labels, classes, probs, find_issues(class_index(labels, classes), probs, issue_filter)
