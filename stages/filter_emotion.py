"""filter_emotion: keep source- and target-emotion faces whose label a classifier confirms; reject the rest.

Run from the project root (DVC does this):  python -m stages.filter_emotion
Reads   data/filtered/filter_masks.parquet (its kept ids are this stage's input rows),
        data/filtered/curator_oof.parquet (classifier=curator), data/images + data/parsed (judge crops, sheets)
Params  filter_emotion.{classifier,min_confidence,device,sheet_max}, emotions.{source,target}
Writes  data/filtered/filter_emotion.parquet  id, kept, reason, label, domain (A source / B target, kept rows),
            classifier, p_source, p_target, given_prob, predicted, label_issue
        metrics/filter_emotion.json           input, kept, rejected, kept_fraction, by_reason, kept_per_domain
        plots/filter_emotion/confusion.png    given label class vs the classifier's class, over the input rows
        plots/filter_emotion/<reason>.png     removed faces per reason

Rules, in order: a label that is neither source nor target -> other_emotion; a label cleanlab flags as an issue on
the classifier's probabilities (e.g. a "neutral" that smiles) -> label_issue; the classifier's probability of the
given label below min_confidence -> low_confidence; otherwise kept. With classifier=curator the probabilities and
flags are the curator's out-of-fold ones from train_curator; with classifier=judge the pretrained mini-Xception reads
the face crops here and cleanlab runs on its probabilities (it never saw these faces, so they are out-of-sample too).
"""
import glob
import json
import os
from collections import Counter

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from .lib import params as P
from .lib.codec import decode_png, to_grey
from .lib.contact_sheet import contact_sheet, load_rows
from .lib.curator import ISSUE_FILTERS, OTHER, class_index, curator_classes, find_issues
from .lib.errors import StageError, run_stage
from .lib.labels import EMOTIONS, FER_ORDER
from .lib.tables import kept_ids, read_table, write_json_atomic, write_table_atomic

MASKS = "data/filtered/filter_masks.parquet"
OOF = "data/filtered/curator_oof.parquet"
IMAGES = "data/images"
PARSED = "data/parsed"
OUT = "data/filtered/filter_emotion.parquet"
METRICS = "metrics/filter_emotion.json"
PLOTS = "plots/filter_emotion"
REASONS = ("other_emotion", "label_issue", "low_confidence")


def read_params(params):
    source = P.choice(params, "emotions.source", EMOTIONS)
    target = P.choice(params, "emotions.target", EMOTIONS)
    if source == target:
        raise StageError(f"params: emotions.source and emotions.target are both {source!r}; they must differ")
    classifier = P.choice(params, "filter_emotion.classifier", ["curator", "judge"])
    if classifier == "judge":
        for emotion in (source, target):
            if emotion not in FER_ORDER:
                raise StageError(f"params: filter_emotion.classifier=judge cannot read {emotion!r} (the judge knows "
                                 f"{', '.join(FER_ORDER)}); use classifier=curator")
    P.known("filter_emotion.device")  # classifier=judge only
    p = {"source": source, "target": target, "classifier": classifier,
            "min_confidence": P.number(params, "filter_emotion.min_confidence", float, lo=0.0, hi=1.0),
            "sheet_max": P.number(params, "filter_emotion.sheet_max", int, lo=0, default=32),
            "device_key": "filter_emotion.device",
            "issue_filter": P.choice(params, "curator.issue_filter", ISSUE_FILTERS)}
    P.check_unknown(params, ["filter_emotion"])
    return p


def curator_verdicts(ids, source, target, path=OOF):
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
        raise StageError(f"{path} lacks {len(missing)} of filter_masks' kept ids (e.g. {missing[0]}); "
                         f"rerun train_curator")
    labels = [rows[i]["label"] for i in ids]
    probs = np.asarray([rows[i]["probs"] for i in ids], np.float64).reshape(len(ids), len(classes))
    return labels, classes, probs, np.asarray([rows[i]["label_issue"] for i in ids], bool)


def judge_to_classes(fer_probs: np.ndarray, classes) -> np.ndarray:
    """Fold the judge's 7 FER probabilities into the curator's classes: source, target, and other = the rest."""
    out = np.zeros((len(fer_probs), len(classes)))
    named = [FER_ORDER.index(c) for c in classes if c != OTHER]
    out[:, :len(named)] = fer_probs[:, named]
    if OTHER in classes:
        out[:, classes.index(OTHER)] = 1.0 - fer_probs[:, named].sum(axis=1)
    return out / np.clip(out.sum(axis=1, keepdims=True), 1e-12, None)


def judge_verdicts(ids, source, target, device, issue_filter, images=IMAGES, parsed=PARSED):
    """(labels, classes, probs, label_issue) from the pretrained judge on face crops, cleanlab on its probabilities."""
    from .lib.judge import face_crop, judge_probs, load_judge

    pix = load_rows(images, ids, ["label", "image"])
    boxes = load_rows(parsed, ids, ["face_bbox"])
    labels = [pix[i]["label"] for i in ids]
    crops = []
    for i in tqdm(ids, desc="judge crops", unit="face"):
        grey = to_grey(decode_png(pix[i]["image"]))
        box = boxes.get(i, {}).get("face_bbox") or (0, 0, grey.shape[1], grey.shape[0])
        crops.append(face_crop(grey, box))
    classes = curator_classes(source, target, labels)
    probs = judge_to_classes(judge_probs(load_judge(device=device), crops), classes)
    return labels, classes, probs, find_issues(class_index(labels, classes), probs, issue_filter)


def decide(labels, classes, probs, issues, source, target, min_confidence):
    """(kept, reasons, given_prob) by the rules in the module docstring."""
    y = class_index(labels, classes)
    given_prob = probs[np.arange(len(y)), y]
    reasons = []
    for label, issue, conf in zip(labels, issues, given_prob):
        if label not in (source, target):
            reasons.append("other_emotion")
        elif issue:
            reasons.append("label_issue")
        elif conf < min_confidence:
            reasons.append("low_confidence")
        else:
            reasons.append("")
    return np.asarray([r == "" for r in reasons]), reasons, given_prob


def result_table(ids, labels, classes, probs, issues, kept, reasons, given_prob, p) -> pa.Table:
    domain = {p["source"]: "A", p["target"]: "B"}
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "kept": pa.array(kept, pa.bool_()),
        "reason": pa.array(reasons, pa.string()),
        "label": pa.array(labels, pa.string()),
        "domain": pa.array([domain[lab] if k else None for lab, k in zip(labels, kept)], pa.string()),
        "classifier": pa.array([p["classifier"]] * len(ids), pa.string()),
        "p_source": pa.array(probs[:, 0], pa.float32()),
        "p_target": pa.array(probs[:, 1], pa.float32()),
        "given_prob": pa.array(given_prob, pa.float32()),
        "predicted": pa.array([classes[k] for k in probs.argmax(axis=1)] if len(ids) else [], pa.string()),
        "label_issue": pa.array(issues, pa.bool_()),
    })


def summarise(table: pa.Table, classifier) -> dict:
    kept = table.column("kept").to_pylist()
    reasons = [r for r, k in zip(table.column("reason").to_pylist(), kept) if not k]
    n = len(kept)
    return {"input": n, "kept": sum(kept), "rejected": n - sum(kept), "classifier": classifier,
            "kept_fraction": round(sum(kept) / n, 4) if n else 0.0,
            "by_reason": {r: reasons.count(r) for r in REASONS},
            "kept_per_domain": dict(sorted(Counter(d for d in table.column("domain").to_pylist() if d).items()))}


def confusion_plot(labels, classes, probs, path):
    """Counts of given class (rows) vs the classifier's argmax class (columns), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = class_index(labels, classes)
    pred = probs.argmax(axis=1)
    cm = np.zeros((len(classes), len(classes)), int)
    np.add.at(cm, (y, pred), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(classes) + 1.5, 1.3 * len(classes) + 1))
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("classifier")
    ax.set_ylabel("given label")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


def removed_sheets(table: pa.Table, sheet_max, plots=PLOTS, images=IMAGES, parsed=PARSED):
    from .lib.judge import face_crop

    rows = [r for r in table.select(["id", "reason", "label", "p_source", "p_target"]).to_pylist() if r["reason"]]
    picks = {reason: sorted((r for r in rows if r["reason"] == reason), key=lambda r: r["id"])[:sheet_max]
             for reason in REASONS}
    wanted = {r["id"] for members in picks.values() for r in members}
    pix = load_rows(images, wanted, ["image"])
    boxes = load_rows(parsed, wanted, ["face_bbox"])
    for reason, members in picks.items():
        if not members:
            continue
        thumbs, captions = [], []
        for r in members:
            grey = to_grey(decode_png(pix[r["id"]]["image"]))
            box = boxes.get(r["id"], {}).get("face_bbox") or (0, 0, grey.shape[1], grey.shape[0])
            thumbs.append(face_crop(grey, box))
            captions.append(f"{r['label'][:7]} s{r['p_source']:.2f} t{r['p_target']:.2f}")
        contact_sheet(thumbs, captions, os.path.join(plots, f"{reason}.png"))


def main():
    params = P.load()
    p = read_params(params)
    ids = kept_ids(MASKS, "filter_masks")
    if p["classifier"] == "curator":
        labels, classes, probs, issues = curator_verdicts(ids, p["source"], p["target"])
    else:
        device = P.device(params, p["device_key"])
        labels, classes, probs, issues = judge_verdicts(ids, p["source"], p["target"], device, p["issue_filter"])
    kept, reasons, given_prob = decide(labels, classes, probs, issues, p["source"], p["target"], p["min_confidence"])
    table = result_table(ids, labels, classes, probs, issues, kept, reasons, given_prob, p)
    write_table_atomic(table, OUT)
    metrics = summarise(table, p["classifier"])
    write_json_atomic(metrics, METRICS)
    for stale in glob.glob(os.path.join(PLOTS, "*.png")):
        os.unlink(stale)
    confusion_plot(labels, classes, probs, os.path.join(PLOTS, "confusion.png"))
    removed_sheets(table, p["sheet_max"])
    print(f"filter_emotion ({p['classifier']}): kept {metrics['kept']}/{metrics['input']} "
          f"{metrics['kept_per_domain']}; removed {metrics['by_reason']}")


if __name__ == "__main__":
    run_stage(main)
