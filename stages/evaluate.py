"""evaluate@<roi>: paste the A->B generator's ROI back into every test face and score it with three judges.

Run from the project root (DVC does this):  python -m stages.evaluate mouth
    python -m stages.evaluate combined            # the eyes and mouth translators on the same faces (see COMBINED)
    dvc exp run -S evaluate.color_match=none      # reruns only evaluate@*; `dvc metrics diff` shows the change
    python -m stages.summarize_eval               # every ROI side by side, with intervals
Reads   data/rois/<roi>.parquet (kept rows; test A: id, bbox, crop, alpha; test B: crop; train A and B: ids, for the
        geometry judge's cut), data/images (the photos), data/parsed (face_bbox: the judges' face square and dlib's
        box; label_map, for a grey_masks curator), models/cyclegan/<roi>/generator_AB.pt, models/judge/mini_xception.pt,
        models/curator/curator.pt (train_curator's final curator, fitted on the train split only)
Params  evaluate.{color_match,blend,device,samples,kid_subsets,kid_subset_size,resamples,identity,geometry,workers,
        seed,batch}, emotions.{source,target}
Writes  eval/<roi>/metrics.json   for the translator, the oracle (oracle_*: real target crops of other test faces) and
            the identity generator (control_*): transfer_rate / transfer_gain / target_prob_gain (CNN judge),
            identity_kept_rate / identity_distance (dlib), geometry_gain / geometry_transfer_rate (landmarks), each
            with <name>_ci (95% paired bootstrap) and n_test; transfer_share = transfer_gain / oracle_transfer_gain;
            judge_label_agreement, curator_* rates, outside_changed_px (must be 0), psnr/ssim, kid_roi, brightness;
            definitions in stages/lib/evaluation.py and the README
        dvclive/evaluate/<roi>/metrics.json   the numbers with intervals as scalars (<name>, <name>_lo, <name>_hi),
            which `dvc metrics diff` and `dvc exp show` list (they drop the lists of eval/<roi>/metrics.json)
        plots/evaluate/<roi>.png  original | ROI | generated ROI | composite for the lowest-id test faces
"""
import os
import sys

import pyarrow.compute as pc
import torch
from tqdm import tqdm

from .lib import params as P
from .lib.codec import decode_png
from .lib.contact_sheet import load_rows
from .lib.curator import curator_probs, load_curator
from .lib.errors import StageError, run_stage
from .lib.evaluation import EvalConfig, Face, Judges, Part, evaluate_faces, sample_sheet, translate
from .lib.geometry import GeometryJudge, fit_threshold
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
LIVE = "dvclive/evaluate/{roi}"
ROI_COLUMNS = ["id", "split", "domain", "kept", "bbox", "crop", "alpha"]
# evaluate@combined: the judge reads a smile from the eyes and cheeks as well as the mouth, so the two feature
# translators are also scored applied together, eyes first, to the test faces both manifests keep. Its oracle pastes
# the eyes and the mouth of one other (real target) face; its geometry judge is the smile's.
COMBINED = ("eyes", "mouth")
EDIT_NAMES = ROI_NAMES + ("combined",)


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
        resamples=P.number(params, "evaluate.resamples", int, lo=100, hi=100000, default=1000),
    )
    batch = P.number(params, "evaluate.batch", int, lo=1, hi=4096, default=64)
    workers = P.number(params, "evaluate.workers", int, lo=0, hi=1024, default=0) or os.cpu_count() or 1
    p = {"source": source, "target": target, "config": config, "batch": batch,
         "identity": P.flag(params, "evaluate.identity", default=True),
         "geometry": P.flag(params, "evaluate.geometry", default=True), "workers": workers,
         "device": P.device(params, "evaluate.device")}
    P.check_unknown(params, ["evaluate"])
    return p


def read_rois(roi: str) -> dict:
    """The ROI manifest's kept rows by (split, domain), each sorted by id: {("test", "A"): [row, ...], ...}."""
    path = ROIS.format(roi=roi)
    table = read_upstream(path, ROI_COLUMNS, "extract_rois")
    table = table.filter(pc.fill_null(table.column("kept"), False))
    groups = {}
    for split in ("train", "test"):
        for domain in ("A", "B"):
            part = table.filter(pc.and_(pc.equal(table.column("split"), split),
                                        pc.equal(table.column("domain"), domain)))
            groups[split, domain] = sorted(part.to_pylist(), key=lambda r: r["id"])
    if not groups["test", "A"]:
        raise StageError(f"{path} has no kept test rows of domain A (the source emotion): nothing to evaluate; "
                         f"check the split and emotions.source")
    return groups


def read_faces(rows_a, with_maps: bool = False, more_rows=()) -> list:
    """Join the ROI rows with their photos and face boxes (and label maps: `with_maps`); a missing photo is an error,
    not a skip. `more_rows`: rows of further ROIs, each list aligned with `rows_a` (the combined edit)."""
    images = images_of(rows_a)
    parsed = load_rows(PARSED, [r["id"] for r in rows_a], ["face_bbox"] + (["label_map"] if with_maps else []))
    faces = []
    for i, (r, image) in enumerate(zip(rows_a, images)):
        row = parsed.get(r["id"]) or {}
        label_map = decode_png(row["label_map"]) if row.get("label_map") else None
        more = tuple(Part(tuple(m[i]["bbox"]), decode_png(m[i]["crop"]), decode_png(m[i]["alpha"]))
                     for m in more_rows)
        faces.append(Face(id=r["id"], image=image, face_bbox=row.get("face_bbox"), bbox=tuple(r["bbox"]),
                          crop=decode_png(r["crop"]), alpha=decode_png(r["alpha"]), label_map=label_map, more=more))
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


def images_of(rows) -> list:
    """The photos of manifest rows, in their order; a missing one is an error."""
    ids = [r["id"] for r in rows]
    try:
        images = load_rows(IMAGES, ids, ["image"])
    except FileNotFoundError as err:
        raise StageError(f"{err.args[0]} not found; run ingest first (dvc repro)") from None
    missing = [i for i in ids if not (images.get(i) or {}).get("image")]
    if missing:
        raise StageError(f"{len(missing)} ids lack a photo in {IMAGES} (first {missing[0]}); rerun extract_rois")
    return [decode_png(images[i]["image"]) for i in ids]


def target_faces(rows_b) -> list:
    """(photo, face box) of the real target-domain test faces, for judge_label_agreement."""
    parsed = load_rows(PARSED, [r["id"] for r in rows_b], ["face_bbox"]) if rows_b else {}
    return [(image, (parsed.get(r["id"]) or {}).get("face_bbox")) for r, image in zip(rows_b, images_of(rows_b))]


def geometry_judge(roi: str, groups: dict):
    """The landmark judge and its cut, fitted on the real train faces of both domains (never on test faces)."""
    judge = GeometryJudge(roi)
    scores = {d: judge.scores(tqdm(images_of(groups["train", d]), desc=f"geometry cut: train {d}", unit="face",
                                   leave=False)) for d in ("A", "B")}
    try:
        cut = fit_threshold(scores["A"], scores["B"])
    except ValueError:
        raise StageError("the geometry judge found no face among the train faces of one domain; "
                         "set evaluate.geometry: false") from None
    return judge, cut


def log_headline(metrics: dict, live_dir: str):
    """The numbers with intervals, through dvclive, as scalars DVC can show: `dvc metrics diff` and `dvc exp show`
    drop list values, so each `<name>_ci: [lo, hi]` of eval/<roi>/metrics.json becomes `<name>_lo` / `<name>_hi`."""
    from dvclive import Live

    live = Live(live_dir, resume=False, dvcyaml=False, save_dvc_exp=False, report=None)
    live.log_metric("n_test", metrics["n_test"], plot=False)
    for key in sorted(k[:-3] for k, v in metrics.items() if k.endswith("_ci") and v):
        if metrics.get(key) is not None:
            lo, hi = metrics[f"{key}_ci"]
            for name, value in ((key, metrics[key]), (f"{key}_lo", lo), (f"{key}_hi", hi)):
                live.log_metric(name, round(float(value), 6), plot=False)
    live.make_summary()


def shared_rows(groups: dict, split: str, domain: str) -> list:
    """Per ROI of `groups` ({roi: read_rois(roi)}), its rows of the faces that every ROI keeps, aligned by id."""
    by_roi = {roi: {r["id"]: r for r in g[split, domain]} for roi, g in groups.items()}
    ids = sorted(set.intersection(*(set(rows) for rows in by_roi.values())))
    return [[rows[i] for i in ids] for rows in by_roi.values()]


def read_manifests(roi: str):
    """The ROIs of `roi` (`combined`: COMBINED) and, per ROI, its kept test rows of A and of B for the faces every one
    of them keeps, aligned by id; plus the ROI whose geometry judge applies and that ROI's manifest groups."""
    parts = COMBINED if roi == "combined" else (roi,)
    groups = {r: read_rois(r) for r in parts}
    rows_a, rows_b = shared_rows(groups, "test", "A"), shared_rows(groups, "test", "B")
    if not rows_a[0]:
        raise StageError(f"no test face of domain A is kept in every one of {', '.join(parts)}")
    geometry_roi = "mouth" if "mouth" in parts else parts[0]
    return parts, rows_a, rows_b, geometry_roi, groups[geometry_roi]


def per_face(per_part: list, parts) -> list:
    """One item per face: the item itself for one ROI, a tuple of every ROI's for several."""
    return per_part[0] if len(parts) == 1 else list(zip(*per_part))


def evaluate(roi: str):
    p = read_params(P.load())
    torch.set_num_threads(min(4, torch.get_num_threads()))
    P.seed_everything(p["config"].seed)
    parts, rows_a, rows_b, geometry_roi, groups = read_manifests(roi)
    generators = [read_generator(r, p["device"], decode_png(rows[0]["crop"]).shape[0])
                  for r, rows in zip(parts, rows_a)]
    curator, classify = read_curator(p["source"], p["target"], p["device"])
    faces = read_faces(rows_a[0], curator.input == "grey_masks", more_rows=rows_a[1:])
    generated = per_face([translate(g, [f.parts[k].crop for f in faces], p["device"], p["batch"])
                          for k, g in enumerate(generators)], parts)
    real_b = per_face([[decode_png(x["crop"]) for x in rows] for rows in rows_b], parts)
    judges = Judges(judge=load_judge(device=p["device"]), curator=classify, identity=p["identity"],
                    identity_workers=p["workers"])
    if p["geometry"]:
        judges.geometry, judges.geometry_cut = geometry_judge(geometry_roi, groups)
    print(f"evaluate@{roi}: {len(faces)} test faces ({p['source']}), {len(real_b)} real {p['target']} crops, "
          f"color_match={p['config'].color_match}, blend={p['config'].blend}, device={p['device']}", file=sys.stderr)
    metrics, picks = evaluate_faces(faces, generated, judges, p["source"], p["target"], real_b, p["config"],
                                    real_target_faces=target_faces(rows_b[0]))
    out = OUT.format(roi=roi)
    write_json_atomic(metrics, os.path.join(out, "metrics.json"))
    log_headline(metrics, LIVE.format(roi=roi))
    sample_sheet(picks, SAMPLES.format(roi=roi))
    ci = metrics["transfer_gain_ci"]
    print(f"evaluate@{roi}: transfer_gain={metrics['transfer_gain']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
          f"(oracle {metrics.get('oracle_transfer_gain')}), identity_kept_rate={metrics['identity_kept_rate']}, "
          f"geometry_gain={metrics['geometry_gain']}, outside_changed_px={metrics['outside_changed_px']}",
          file=sys.stderr)


def main(argv):
    if len(argv) != 1 or argv[0] not in EDIT_NAMES:
        raise StageError(f"usage: python -m stages.evaluate <roi>, with <roi> one of {', '.join(EDIT_NAMES)}")
    roi = argv[0]
    try:
        evaluate(roi)
    except StageError as err:
        raise StageError(f"evaluate@{roi}: {err}") from None


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
