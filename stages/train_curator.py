"""train_curator: cross-fit the curator CNN on the faces filter_masks kept and flag label issues with cleanlab.

Run from the project root (DVC does this):  python -m stages.train_curator
Reads   data/filtered/filter_masks.parquet (kept ids), data/images (label, image), data/parsed (face_bbox, label_map),
        models/judge/mini_xception.pt (curator.backbone=judge: its frozen features)
Params  curator.{backbone,input,size,folds,epochs,batch,lr,seed,device}, emotions.{source,target}
Writes  data/filtered/curator_oof.parquet  one row per kept id: id, label (ingested), given (its curator class),
            fold, probs (out-of-fold, in the order of the `classes` schema metadata and `classes` column),
            p_source, p_target, predicted, given_prob, label_issue (cleanlab.filter.find_label_issues)
        models/curator/curator.pt    the final curator: the same net and config refitted on the train split's rows after
            the cross-fit (seed: the fold scheme's next index; no test face is a training example, so evaluate's curator
            rates are out of sample), with its backbone, input, size, classes and source/target
            (stages.lib.curator.load_curator / curator_probs read it; evaluate@roi uses it for curator_transfer_rate)
        metrics/train_curator.json   rows, classes, out-of-fold accuracy (all classes, and source vs target), issues,
            the final curator's accuracy on the held-out test rows (final_test_accuracy)

The classifier lives in its own stage so that changing filter_emotion's params reruns only filter_emotion.
"""
import json
import os
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import torch

from .lib import params as P
from .lib.codec import decode_png, to_grey
from .lib.contact_sheet import load_rows
from .lib.curator import (ISSUE_FILTERS, CuratorConfig, class_index, cross_fit, curator_classes, face_inputs,
                          final_seed, find_issues, judge_features, predict, save_curator, train_net)
from .lib.errors import StageError, run_stage
from .lib.labels import EMOTIONS
from .lib.tables import kept_ids, write_json_atomic, write_table_atomic

MASKS = "data/filtered/filter_masks.parquet"
IMAGES = "data/images"
PARSED = "data/parsed"
OUT = "data/filtered/curator_oof.parquet"
MODEL = "models/curator/curator.pt"
METRICS = "metrics/train_curator.json"


def read_params(params):
    source = P.choice(params, "emotions.source", EMOTIONS)
    target = P.choice(params, "emotions.target", EMOTIONS)
    if source == target:
        raise StageError(f"params: emotions.source and emotions.target are both {source!r}; they must differ")
    cfg = CuratorConfig(folds=P.number(params, "curator.folds", int, lo=2, hi=20),
                        epochs=P.number(params, "curator.epochs", int, lo=1, hi=500),
                        batch=P.number(params, "curator.batch", int, lo=2, hi=4096),
                        lr=P.number(params, "curator.lr", float, lo=1e-6, hi=1.0),
                        seed=P.number(params, "curator.seed", int, lo=0))
    p = {"source": source, "target": target, "cfg": cfg,
         "input": P.choice(params, "curator.input", ["grey", "grey_masks"]),
         "backbone": P.choice(params, "curator.backbone", ["judge", "scratch"]),
         "issue_filter": P.choice(params, "curator.issue_filter", ISSUE_FILTERS),
         "size": P.number(params, "curator.side", int, lo=16, hi=256),
         "device": P.device(params, "curator.device")}
    P.check_unknown(params, ["curator", "emotions"])
    return p


def load_faces(ids, with_masks: bool, images=IMAGES, parsed=PARSED):
    """(grey images, labels, splits, bboxes, label maps or None) for `ids`, in that order."""
    pix = load_rows(images, ids, ["label", "split", "image"])
    par = load_rows(parsed, ids, ["face_bbox"] + (["label_map"] if with_masks else []))
    missing = [i for i in ids if i not in pix or pix[i]["image"] is None]
    if missing:
        raise StageError(f"{images} lacks image bytes for {len(missing)} kept ids (e.g. {missing[0]}); rerun ingest")
    greys = [to_grey(decode_png(pix[i]["image"])) for i in ids]
    labels = [pix[i]["label"] for i in ids]
    splits = [pix[i]["split"] for i in ids]
    bboxes = [par.get(i, {}).get("face_bbox") for i in ids]
    maps = None
    if with_masks:
        maps = [decode_png(par[i]["label_map"]) if par.get(i, {}).get("label_map") else None for i in ids]
    return greys, labels, splits, bboxes, maps


def oof_table(ids, labels, classes, y, folds, probs, issues, source, target) -> pa.Table:
    pred = probs.argmax(axis=1)
    schema_meta = {b"classes": json.dumps(classes).encode()}
    return pa.table({
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
    }).replace_schema_metadata(schema_meta)


def summarise(classes, y, probs, issues, source, target) -> dict:
    pred = probs.argmax(axis=1)
    st = y < 2  # classes[0] is the source, classes[1] the target
    binary = (probs[st, 1] > probs[st, 0]).astype(int) == y[st]
    return {"rows": int(len(y)), "classes": classes,
            "rows_per_class": {c: int((y == k).sum()) for k, c in enumerate(classes)},
            "oof_accuracy": round(float((pred == y).mean()), 4) if len(y) else 0.0,
            f"oof_accuracy_{source}_vs_{target}": round(float(binary.mean()), 4) if st.any() else 0.0,
            "label_issues": int(issues.sum()),
            "label_issues_per_class": {c: int((issues & (y == k)).sum()) for k, c in enumerate(classes)}}


def fit_final(x, y, is_test, classes, p) -> dict:
    """The curator evaluate uses on new faces: the cross-fit's net and config, trained on the train split only, so
    that no test face evaluate scores (originals or their composites) was ever a training example. Returns its
    accuracy on the held-out test rows (an out-of-sample number: with shuffled labels it falls to chance)."""
    train = ~is_test
    if train.sum() < 2:
        raise StageError(f"train_curator needs train-split faces for the final curator, got {int(train.sum())}")
    net = train_net(x[train], y[train], len(classes), p["cfg"], p["device"], seed=final_seed(p["cfg"]))
    save_curator(MODEL, net, {"backbone": p["backbone"], "input": p["input"], "size": p["size"], "classes": classes,
                              "source": p["source"], "target": p["target"]})
    accuracy = None
    if is_test.any():
        accuracy = round(float((predict(net, x[is_test], p["device"]).argmax(axis=1) == y[is_test]).mean()), 4)
    return {"final_train_rows": int(train.sum()), "final_test_rows": int(is_test.sum()),
            "final_test_accuracy": accuracy}


def main():
    params = P.load()
    p = read_params(params)
    # Deterministic cuBLAS needs a fixed workspace; without it torch raises at the first matmul on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    ids = kept_ids(MASKS, "filter_masks")
    if len(ids) < 2 * p["cfg"].folds:
        raise StageError(f"train_curator needs at least {2 * p['cfg'].folds} faces kept by filter_masks for "
                         f"curator.folds={p['cfg'].folds}, got {len(ids)}")
    greys, labels, splits, bboxes, maps = load_faces(ids, p["input"] == "grey_masks")
    classes = curator_classes(p["source"], p["target"], labels)
    y = class_index(labels, classes)
    counts = Counter(classes[k] for k in y)
    if counts[p["source"]] < 2 or counts[p["target"]] < 2:
        raise StageError(f"train_curator needs >= 2 faces of each of {p['source']} and {p['target']}, "
                         f"got {dict(counts)}; check emotions.source/target against the ingested labels")
    t0 = time.perf_counter()
    if p["backbone"] == "judge":
        x = judge_features(greys, bboxes, p["device"], label_maps=maps)
    else:
        x = face_inputs(greys, bboxes, p["size"], maps)
    probs, folds = cross_fit(x, y, len(classes), p["cfg"], p["device"])
    t_fit = time.perf_counter()
    final = fit_final(x, y, np.array([s == "test" for s in splits]), classes, p)
    t_final = time.perf_counter()
    issues = find_issues(y, probs, p["issue_filter"])
    write_table_atomic(oof_table(ids, labels, classes, y, folds, probs, issues, p["source"], p["target"]), OUT)
    metrics = {**summarise(classes, y, probs, issues, p["source"], p["target"]), **final}
    write_json_atomic(metrics, METRICS)
    key = f"oof_accuracy_{p['source']}_vs_{p['target']}"
    print(f"train_curator: {len(ids)} faces, classes {classes}, out-of-fold accuracy {metrics['oof_accuracy']:.3f} "
          f"({key} {metrics[key]:.3f}), {metrics['label_issues']} label issues, {time.perf_counter() - t0:.1f}s "
          f"(features and cross-fit {t_fit - t0:.1f}s, final fit {t_final - t_fit:.1f}s)")


if __name__ == "__main__":
    run_stage(main)
