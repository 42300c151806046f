"""filter_emotion: keep source- and target-emotion faces whose label a classifier confirms; reject the rest.

Run from the project root (DVC does this):  python -m stages.filter_emotion
Reads   data/filtered/filter_masks.parquet (its kept ids are this stage's input rows),
        data/filtered/curator_oof.parquet (classifier=curator), data/images + data/parsed (judge crops, sheets)
Params  filter_emotion.{classifier,min_confidence,min_pseudo_confidence,device,sheet_max}, emotions.{source,target}
Writes  data/filtered/filter_emotion.parquet  id, kept, reason, label, label_source, label_prob (ingest's),
            domain (A source / B target, kept rows), classifier, p_source, p_target, given_prob, predicted, label_issue
        metrics/filter_emotion.json           input, kept, rejected, kept_fraction, by_reason, kept_per_domain
        plots/confusion/filter_emotion.csv    given label class vs the classifier's class per input row (a DVC
            `confusion` plot, declared in dvc.yaml, so `dvc plots diff` compares it across experiments)
        plots/filter_emotion/<reason>.png     removed faces per reason, captioned given>read class, P(source), P(target)

Rules, in order: a label that is neither source nor target -> other_emotion; a judge pseudo-label (label_source
judge, ingest.source image_folder) below min_pseudo_confidence -> pseudo_low_confidence; a label cleanlab flags on
the classifier's probabilities -> label_issue when it reads the other of source and target (a "neutral" that smiles),
label_other when it reads neither (a "neutral" that talks or frowns); the classifier's probability of the
given label below min_confidence -> low_confidence; otherwise kept. With classifier=curator the probabilities and
flags are the curator's out-of-fold ones from train_curator; with classifier=judge the pretrained mini-Xception reads
the face crops here and cleanlab runs on its probabilities (it never saw these faces, so they are out-of-sample too).
"""

import glob
import os

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from .lib import params as P
from .lib import paths
from .lib.boxes import face_box, face_crop
from .lib.codec import decode_image, to_grey
from .lib.contact_sheet import contact_sheet
from .lib.errors import StageError, run_stage
from .lib.label_issues import (
    ISSUE_FILTERS,
    REASONS,
    class_index,
    curator_classes,
    curator_verdicts,
    decide,
    find_issues,
    judge_to_classes,
    label_provenance,
    pseudo_rule,
    verdict_summary,
    verdict_table,
    write_confusion,
)
from .lib.labels import FER_ORDER
from .lib.tables import iter_faces, kept_ids, load_faces, write_json_atomic, write_table_atomic

PLOTS = paths.plots_dir("filter_emotion")


def read_params(params):
    source, target = P.emotions(params)
    classifier = P.choice(params, "filter_emotion.classifier", ["curator", "judge"])
    if classifier == "judge":
        for emotion in (source, target):
            if emotion not in FER_ORDER:
                raise StageError(
                    f"params: filter_emotion.classifier=judge cannot read {emotion!r} (the judge knows "
                    f"{', '.join(FER_ORDER)}); use classifier=curator"
                )
    P.known("filter_emotion.device")  # classifier=judge only
    p = {
        "source": source,
        "target": target,
        "classifier": classifier,
        "min_confidence": P.number(params, "filter_emotion.min_confidence", float, lo=0.0, hi=1.0),
        "min_pseudo": P.number(params, "filter_emotion.min_pseudo_confidence", float, lo=0.0, hi=1.0),
        "sheet_max": P.number(params, "filter_emotion.sheet_max", int, lo=0, default=32),
        "issue_filter": P.choice(params, "curator.issue_filter", ISSUE_FILTERS),
    }
    P.check_unknown(params, ["filter_emotion"])
    return p


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
    from .lib.judge import STREAM_BATCH, judge_probs, load_judge

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


def removed_sheets(table: pa.Table, sheet_max, plots=PLOTS):
    columns = ["id", "reason", "label", "p_source", "p_target", "predicted"]
    rows = [r for r in table.select(columns).to_pylist() if r["reason"]]
    picks = {
        reason: sorted((r for r in rows if r["reason"] == reason), key=lambda r: r["id"])[:sheet_max]
        for reason in REASONS
    }
    wanted = [r["id"] for members in picks.values() for r in members]
    faces = load_faces(wanted, ["image"], ["face_bbox"])
    for reason, members in picks.items():
        if members:
            # given label > the classifier's top class, then P(source) and P(target)
            captions = [
                f"{r['label'][:5]}>{r['predicted'][:5]} s{r['p_source']:.2f} t{r['p_target']:.2f}" for r in members
            ]
            contact_sheet(
                grey_face_squares([r["id"] for r in members], faces), captions, os.path.join(plots, f"{reason}.png")
            )


def main():
    params = P.load()
    p = read_params(params)
    ids = kept_ids(paths.FILTER_MASKS, "filter_masks")
    if p["classifier"] == "curator":
        labels, classes, probs, issues = curator_verdicts(ids, p["source"], p["target"], paths.CURATOR_OOF)
    else:
        device = P.device(params, "filter_emotion.device")
        labels, classes, probs, issues = judge_verdicts(ids, p["source"], p["target"], device, p["issue_filter"])
    kept, reasons, given_prob = decide(labels, classes, probs, issues, p["source"], p["target"], p["min_confidence"])
    provenance = label_provenance(ids, paths.IMAGES)
    kept, reasons = pseudo_rule(reasons, labels, *provenance, p["source"], p["target"], p["min_pseudo"])
    table = verdict_table(ids, labels, classes, probs, issues, kept, reasons, given_prob, p, provenance)
    write_table_atomic(table, paths.FILTER_EMOTION)
    metrics = verdict_summary(table, p["classifier"])
    write_json_atomic(metrics, paths.metrics_file("filter_emotion"))
    for stale in glob.glob(os.path.join(PLOTS, "*.png")):
        os.unlink(stale)
    write_confusion(table, classes, os.path.join(paths.plots_dir("confusion"), "filter_emotion.csv"))
    removed_sheets(table, p["sheet_max"])
    print(
        f"filter_emotion ({p['classifier']}): kept {metrics['kept']}/{metrics['input']} "
        f"{metrics['kept_per_domain']}; removed {metrics['by_reason']}"
    )


if __name__ == "__main__":
    run_stage(main)
