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
        dvclive/curator/   the same numbers through dvclive (`dvc exp show` lists them beside the translators')

The classifier lives in its own stage so that changing filter_emotion's params reruns only filter_emotion.
"""

import os
import time
from collections import Counter

import numpy as np
import torch

from .lib import params as P
from .lib import paths
from .lib.curator import (
    CuratorConfig,
    cross_fit,
    cross_fit_summary,
    curator_inputs,
    final_seed,
    predict,
    save_curator,
    train_net,
)
from .lib.errors import StageError, run_stage
from .lib.label_issues import ISSUE_FILTERS, class_index, curator_classes, find_issues, oof_table
from .lib.live import log_scalars
from .lib.tables import kept_ids, write_json_atomic, write_table_atomic


def read_params(params):
    source, target = P.emotions(params)
    cfg = CuratorConfig(
        folds=P.number(params, "curator.folds", int, lo=2, hi=20),
        epochs=P.number(params, "curator.epochs", int, lo=1, hi=500),
        batch=P.number(params, "curator.batch", int, lo=2, hi=4096),
        lr=P.number(params, "curator.lr", float, lo=1e-6, hi=1.0),
        seed=P.number(params, "curator.seed", int, lo=0),
    )
    p = {
        "source": source,
        "target": target,
        "cfg": cfg,
        "input": P.choice(params, "curator.input", ["grey", "grey_masks"]),
        "backbone": P.choice(params, "curator.backbone", ["judge", "scratch"]),
        "issue_filter": P.choice(params, "curator.issue_filter", ISSUE_FILTERS),
        "size": P.number(params, "curator.side", int, lo=16, hi=256),
        "device": P.device(params, "curator.device"),
    }
    P.check_unknown(params, ["curator", "emotions"])
    return p


def fit_final(x, y, is_test, classes, p) -> dict:
    """The curator evaluate uses on new faces: the cross-fit's net and config, trained on the train split only, so
    that no test face evaluate scores (originals or their composites) was ever a training example. Returns its
    accuracy on the held-out test rows (an out-of-sample number: with shuffled labels it falls to chance)."""
    train = ~is_test
    if train.sum() < 2:
        raise StageError(f"train_curator needs train-split faces for the final curator, got {int(train.sum())}")
    net = train_net(x, y, len(classes), p["cfg"], p["device"], seed=final_seed(p["cfg"]), rows=np.flatnonzero(train))
    save_curator(
        paths.CURATOR,
        net,
        {
            "backbone": p["backbone"],
            "input": p["input"],
            "size": p["size"],
            "classes": classes,
            "source": p["source"],
            "target": p["target"],
        },
    )
    accuracy = None
    if is_test.any():
        accuracy = round(float((predict(net, x[is_test], p["device"]).argmax(axis=1) == y[is_test]).mean()), 4)
    return {
        "final_train_rows": int(train.sum()),
        "final_test_rows": int(is_test.sum()),
        "final_test_accuracy": accuracy,
    }


def main():
    params = P.load()
    p = read_params(params)
    if p["device"].type == "cuda":
        # Deterministic cuBLAS needs a fixed workspace; without it torch raises at the first matmul on CUDA. On CPU
        # the switch is not needed (the outputs' bytes are the same without it) and costs ~150 MB of RSS.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    P.pin_torch_threads()
    ids = kept_ids(paths.FILTER_MASKS, "filter_masks")
    if len(ids) < 2 * p["cfg"].folds:
        raise StageError(
            f"train_curator needs at least {2 * p['cfg'].folds} faces kept by filter_masks for "
            f"curator.folds={p['cfg'].folds}, got {len(ids)}"
        )
    t0 = time.perf_counter()
    x, labels, splits = curator_inputs(ids, p["backbone"], p["input"] == "grey_masks", p["size"], p["device"])
    classes = curator_classes(p["source"], p["target"], labels)
    y = class_index(labels, classes)
    counts = Counter(classes[k] for k in y)
    if counts[p["source"]] < 2 or counts[p["target"]] < 2:
        raise StageError(
            f"train_curator needs >= 2 faces of each of {p['source']} and {p['target']}, "
            f"got {dict(counts)}; check emotions.source/target against the ingested labels"
        )
    probs, folds = cross_fit(x, y, len(classes), p["cfg"], p["device"])
    t_fit = time.perf_counter()
    final = fit_final(x, y, np.array([s == "test" for s in splits]), classes, p)
    t_final = time.perf_counter()
    # The inputs are done with: at 20k faces they are ~50 MB that the imports below (cleanlab, dvclive) would add to.
    del x
    issues = find_issues(y, probs, p["issue_filter"])
    write_table_atomic(
        oof_table(ids, labels, classes, y, folds, probs, issues, p["source"], p["target"]), paths.CURATOR_OOF
    )
    metrics = {**cross_fit_summary(classes, y, probs, issues, p["source"], p["target"]), **final}
    write_json_atomic(metrics, paths.metrics_file("train_curator"))
    log_scalars(metrics, paths.live_dir("curator"))
    key = f"oof_accuracy_{p['source']}_vs_{p['target']}"
    print(
        f"train_curator: {len(ids)} faces, classes {classes}, out-of-fold accuracy {metrics['oof_accuracy']:.3f} "
        f"({key} {metrics[key]:.3f}), {metrics['label_issues']} label issues, {time.perf_counter() - t0:.1f}s "
        f"(features and cross-fit {t_fit - t0:.1f}s, final fit {t_final - t_fit:.1f}s)"
    )


if __name__ == "__main__":
    run_stage(main)
