"""evaluate@<roi>: paste the A->B generator's ROI back into every test face and ask the independent judge.

Run from the project root (DVC does this):  python -m stages.evaluate mouth
    dvc exp run -S evaluate.color_match=none      # reruns only evaluate@*; `dvc metrics diff` shows the change
Reads   data/rois/<roi>.parquet (kept rows; domain A test: id, bbox, crop, alpha; domain B test: crop)
        data/images (the photos), data/parsed (face_bbox, for the judge's face square; label_map, for a grey_masks
        curator), models/cyclegan/<roi>/generator_AB.pt (stages.lib.networks.load_generator),
        models/judge/mini_xception.pt, models/curator/curator.pt (train_curator's final curator)
Params  evaluate.{color_match,blend,device,samples,kid_subsets,kid_subset_size,seed,batch}, emotions.{source,target}
Writes  eval/<roi>/metrics.json   transfer_rate (headline: judge argmax is emotions.target), transfer_rate_binary,
            baseline_rate(_binary) on the unedited originals, transfer_gain(_binary), target_prob_gain,
            curator_transfer_rate / curator_baseline_rate, outside_changed_px (must be 0), psnr_/ssim_ image and roi,
            kid_roi (+ kid_roi_std), brightness_shift (configured colour match) and brightness_shift_raw (none),
            n_test, n_real_target; definitions in stages/lib/evaluation.py and the README
        plots/evaluate/<roi>.png  original | ROI | generated ROI | composite for the lowest-id test faces

curator_transfer_rate / curator_baseline_rate: share of composites / originals whose argmax for the saved curator is
emotions.target, read on the same face box. A grey_masks curator gets the original's parsed label map for the
composite as well: the paste changes pixels only inside the ROI, so that map is the best one there is.
"""
import os
import sys

import pyarrow.compute as pc
import torch

from .lib import params as P
from .lib.codec import decode_png
from .lib.contact_sheet import load_rows
from .lib.curator import curator_probs, load_curator
from .lib.errors import StageError, run_stage
from .lib.evaluation import EvalConfig, Face, evaluate_faces, sample_sheet, translate
from .lib.judge import load_judge
from .lib.labels import EMOTIONS
from .lib.networks import load_generator
from .lib.overlay import BLENDS, COLOR_MATCHES
from .lib.rois import ROI_NAMES
from .lib.tables import read_upstream, write_json_atomic

IMAGES = "data/images"
PARSED = "data/parsed"
ROIS = "data/rois/{roi}.parquet"
GENERATOR = "models/cyclegan/{roi}/generator_AB.pt"
CURATOR = "models/curator/curator.pt"
OUT = "eval/{roi}"
# Pictures live under plots/ so that eval/ holds only metrics (dvc metrics reads every file of a listed folder).
SAMPLES = "plots/evaluate/{roi}.png"
ROI_COLUMNS = ["id", "split", "domain", "kept", "bbox", "crop", "alpha"]


def read_params(params) -> dict:
    source = P.choice(params, "emotions.source", EMOTIONS)
    target = P.choice(params, "emotions.target", EMOTIONS)
    if source == target:
        raise StageError(f"params: emotions.source and emotions.target are both {source!r}; they must differ")
    config = EvalConfig(
        color_match=P.choice(params, "evaluate.color_match", COLOR_MATCHES),
        blend=P.choice(params, "evaluate.blend", BLENDS),
        n_samples=P.number(params, "evaluate.samples", int, lo=0, hi=64, default=8),
        kid_subsets=P.number(params, "evaluate.kid_subsets", int, lo=1, hi=10000, default=100),
        kid_subset_size=P.number(params, "evaluate.kid_subset_size", int, lo=2, default=1000),
        seed=P.number(params, "evaluate.seed", int, lo=0, default=0),
    )
    batch = P.number(params, "evaluate.batch", int, lo=1, hi=4096, default=64)
    return {"source": source, "target": target, "config": config, "batch": batch,
            "device": P.device(params, "evaluate.device")}


def read_rois(roi: str):
    """(domain-A test rows, domain-B test crops) from the ROI manifest's kept rows."""
    path = ROIS.format(roi=roi)
    table = read_upstream(path, ROI_COLUMNS, "extract_rois")
    test = table.filter(pc.and_(pc.equal(table.column("split"), "test"), pc.fill_null(table.column("kept"), False)))
    rows_a = sorted(test.filter(pc.equal(test.column("domain"), "A")).to_pylist(), key=lambda r: r["id"])
    rows_b = sorted(test.filter(pc.equal(test.column("domain"), "B")).to_pylist(), key=lambda r: r["id"])
    if not rows_a:
        raise StageError(f"{path} has no kept test rows of domain A (the source emotion): nothing to evaluate; "
                         f"check the split and emotions.source")
    return rows_a, [decode_png(r["crop"]) for r in rows_b]


def read_faces(rows_a, with_maps: bool = False) -> list:
    """Join the ROI rows with their photos and face boxes (and label maps: `with_maps`); a missing photo is an error,
    not a skip."""
    ids = [r["id"] for r in rows_a]
    try:
        images = load_rows(IMAGES, ids, ["image"])
        parsed = load_rows(PARSED, ids, ["face_bbox"] + (["label_map"] if with_maps else []))
    except FileNotFoundError as err:
        raise StageError(f"{err.args[0]} not found; run ingest and parse first (dvc repro)") from None
    missing = [i for i in ids if not (images.get(i) or {}).get("image")]
    if missing:
        raise StageError(f"{len(missing)} test ids lack a photo in {IMAGES} (first {missing[0]}); rerun extract_rois")
    faces = []
    for r in rows_a:
        row = parsed.get(r["id"]) or {}
        label_map = decode_png(row["label_map"]) if row.get("label_map") else None
        faces.append(Face(id=r["id"], image=decode_png(images[r["id"]]["image"]), face_bbox=row.get("face_bbox"),
                          bbox=tuple(r["bbox"]), crop=decode_png(r["crop"]), alpha=decode_png(r["alpha"]),
                          label_map=label_map))
    return faces


def read_generator(roi: str, device, crop_side: int):
    path = GENERATOR.format(roi=roi)
    if not os.path.isfile(path):
        raise StageError(f"generator weights {path} not found; train them with `dvc repro train@{roi}`")
    try:
        generator = load_generator(path, device)
    except StageError:
        raise
    except Exception as err:  # a damaged or foreign file: torch and the state-dict loader raise many types
        first = (str(err).strip().splitlines() or [""])[0]
        raise StageError(f"generator weights {path} are unreadable ({type(err).__name__}: {first}); "
                         f"retrain with `dvc repro train@{roi}`") from None
    trained_side = generator.config.get("size")
    if trained_side is not None and int(trained_side) != crop_side:
        raise StageError(f"{path} was trained on {trained_side}px crops but {ROIS.format(roi=roi)} has "
                         f"{crop_side}px crops; retrain with `dvc repro train@{roi}`")
    return generator


def read_curator(source: str, target: str, device):
    """train_curator's final curator as evaluate_faces' callable; it must have been trained for these emotions."""
    curator = load_curator(CURATOR, device)
    if (curator.source, curator.target) != (source, target):
        raise StageError(f"{CURATOR} was trained for {curator.source}->{curator.target}, the params ask for "
                         f"{source}->{target}; retrain it with `dvc repro train_curator`")

    def classify(images, face_boxes, label_maps):
        return curator_probs(curator, images, face_boxes, label_maps), curator.classes

    return curator, classify


def evaluate(roi: str):
    p = read_params(P.load())
    torch.set_num_threads(min(4, torch.get_num_threads()))
    P.seed_everything(p["config"].seed)
    rows_a, real_b = read_rois(roi)
    generator_side = decode_png(rows_a[0]["crop"]).shape[0]
    generator = read_generator(roi, p["device"], generator_side)
    curator, classify = read_curator(p["source"], p["target"], p["device"])
    faces = read_faces(rows_a, with_maps=curator.input == "grey_masks")
    judge = load_judge(device=p["device"])
    print(f"evaluate@{roi}: {len(faces)} test faces ({p['source']}), {len(real_b)} real {p['target']} crops, "
          f"color_match={p['config'].color_match}, blend={p['config'].blend}, device={p['device']}", file=sys.stderr)
    generated = translate(generator, [f.crop for f in faces], p["device"], p["batch"])
    metrics, picks = evaluate_faces(faces, generated, judge, p["source"], p["target"], real_b, p["config"],
                                    curator=classify)
    out = OUT.format(roi=roi)
    write_json_atomic(metrics, os.path.join(out, "metrics.json"))
    sample_sheet(picks, SAMPLES.format(roi=roi))
    print(f"evaluate@{roi}: transfer_rate={metrics['transfer_rate']:.3f} (baseline {metrics['baseline_rate']:.3f}), "
          f"curator_transfer_rate={metrics['curator_transfer_rate']:.3f} "
          f"(baseline {metrics['curator_baseline_rate']:.3f}), outside_changed_px={metrics['outside_changed_px']}",
          file=sys.stderr)


def main(argv):
    if len(argv) != 1 or argv[0] not in ROI_NAMES:
        raise StageError(f"usage: python -m stages.evaluate <roi>, with <roi> one of {', '.join(ROI_NAMES)}")
    roi = argv[0]
    try:
        evaluate(roi)
    except StageError as err:
        raise StageError(f"evaluate@{roi}: {err}") from None


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
