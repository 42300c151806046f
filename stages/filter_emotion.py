"""filter_emotion: keep source- and target-emotion faces whose label a classifier confirms; reject the rest.

Run from the project root (DVC does this):  python -m stages.filter_emotion
Reads   data/filtered/filter_masks.parquet (its kept ids are this stage's input rows),
        data/filtered/curator_oof.parquet (classifier=curator), data/images + data/parsed (judge crops, sheets)
Params  filter_emotion.{classifier,min_confidence,label_other,min_pseudo_confidence,device,sheet_max},
        emotions.{source,target}
Writes  data/filtered/filter_emotion.parquet  id, kept, reason, label, label_source, label_prob (ingest's),
            domain (A source / B target, kept rows), classifier, p_source, p_target, given_prob, predicted, label_issue
        metrics/filter_emotion.json           input, kept, rejected, kept_fraction, by_reason, kept_per_domain,
            kept_read_other (kept faces the classifier reads as neither source nor target)
        plots/confusion/filter_emotion.csv    given label class vs the classifier's class per input row (a DVC
            `confusion` plot, declared in dvc.yaml, so `dvc plots diff` compares it across experiments)
        plots/filter_emotion/<name>.png       removed faces per reason, and kept_read_other, captioned given>read
            class P(source)/P(target)

Rules, in order: a label that is neither source nor target -> other_emotion; a judge pseudo-label (label_source
judge, ingest.source image_folder) below min_pseudo_confidence -> pseudo_low_confidence; with label_other=keep, a face
the classifier reads as neither source nor target but prefers its given label to the other of the two -> kept; a
label cleanlab flags on the classifier's probabilities -> label_issue when it reads the other of source and target
(a "neutral" that smiles), label_other when it reads neither (a "neutral" that talks or frowns); the classifier's
probability of the given label below min_confidence -> low_confidence; otherwise kept. With classifier=curator the
probabilities and flags are the curator's out-of-fold ones from train_curator; with classifier=judge the pretrained
mini-Xception reads the face crops here and cleanlab runs on its probabilities (it never saw these faces, so they
are out-of-sample too).
"""

import glob
import os

import pyarrow as pa

from .lib import params as P
from .lib import paths
from .lib.contact_sheet import contact_sheet
from .lib.errors import StageError, run_stage
from .lib.label_issues import (
    ISSUE_FILTERS,
    LABEL_OTHER,
    OTHER,
    REASONS,
    curator_verdicts,
    decide,
    grey_face_squares,
    judge_verdicts,
    label_provenance,
    pseudo_rule,
    verdict_summary,
    verdict_table,
    write_confusion,
)
from .lib.labels import FER_ORDER
from .lib.tables import kept_ids, load_faces, write_json_atomic, write_table_atomic

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
        "label_other": P.choice(params, "filter_emotion.label_other", LABEL_OTHER),
        "min_pseudo": P.number(params, "filter_emotion.min_pseudo_confidence", float, lo=0.0, hi=1.0),
        "sheet_max": P.number(params, "filter_emotion.sheet_max", int, lo=0, default=32),
        "issue_filter": P.choice(params, "curator.issue_filter", ISSUE_FILTERS),
    }
    P.check_unknown(params, ["filter_emotion"])
    return p


def removed_sheets(table: pa.Table, sheet_max, plots=PLOTS):
    """A sheet per reject reason, and kept_read_other.png: faces kept under their label that the classifier reads
    as neither source nor target (label_other=keep), so a user sees what that setting lets in."""
    columns = ["id", "kept", "reason", "label", "p_source", "p_target", "predicted"]
    rows = table.select(columns).to_pylist()
    sheets = {reason: [r for r in rows if r["reason"] == reason] for reason in REASONS}
    sheets["kept_read_other"] = [r for r in rows if r["kept"] and r["predicted"] == OTHER]
    picks = {name: sorted(members, key=lambda r: r["id"])[:sheet_max] for name, members in sheets.items()}
    wanted = [r["id"] for members in picks.values() for r in members]
    faces = load_faces(wanted, ["image"], ["face_bbox"])
    for name, members in picks.items():
        if members:
            # given label > the classifier's top class, then P(source)/P(target): 17 characters fit a 100-pixel cell
            captions = [
                f"{r['label'][:3]}>{r['predicted'][:3]} {r['p_source']:.2f}/{r['p_target']:.2f}" for r in members
            ]
            contact_sheet(
                grey_face_squares([r["id"] for r in members], faces), captions, os.path.join(plots, f"{name}.png")
            )


def main():
    params = P.load()
    p = read_params(params)
    ids = kept_ids(paths.FILTER_MASKS, "filter_masks")
    if p["classifier"] == "curator":
        labels, classes, probs, issues = curator_verdicts(ids, p["source"], p["target"], paths.CURATOR_OOF)
    else:
        device = P.device(params, "filter_emotion.device")
        P.pin_torch_threads()
        labels, classes, probs, issues = judge_verdicts(ids, p["source"], p["target"], device, p["issue_filter"])
    kept, reasons, given_prob = decide(
        labels, classes, probs, issues, p["source"], p["target"], p["min_confidence"], p["label_other"]
    )
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
