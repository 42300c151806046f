"""data_card: one page that says whether the curated set is good, instead of ten contact sheets.

Run from the project root (DVC does this):  python -m stages.data_card
Reads   data/images (id, source_key, split, group, label, kept, reason; image bytes only for the strips' faces),
        data/parsed (face_bbox, for the strips' face squares), data/filtered/filter_{quality,masks,emotion}.parquet,
        data/rois/<roi>.parquet (id, split, domain, label, kept, reason), metrics/filter_quality.json (each issue's
        action: reject or report)
Params  data_card.thumbs_per_reason; rois.names (the manifests read); ingest.source, ingest.split_by (named on the
        page beside the leakage they produced)
Writes  reports/data_card.md                     1. images in and kept per stage, 2. every reject reason with its
            count and strip, 3. CleanVision's issues, 4. class balance per split, 5. identity leakage with its
            95% interval; the PNGs linked by relative path, so GitHub renders the page too
        plots/data_card/funnel.png               kept and rejected per stage (a DVC plot, like every PNG here)
        plots/data_card/class_balance.png        curated faces per label and split, kept crops per ROI
        plots/data_card/reject-<stage>-<reason>.png  the lowest-id faces of each reject reason (none for ingest's:
            its rejects have no pixels)
The numbers are stages/lib/data_card.py's, the page and the charts stages/lib/card_page.py's.
"""

import glob
import json
import os

from .lib import data_card as card
from .lib import params as P
from .lib import paths
from .lib.boxes import face_box, face_crop
from .lib.card_page import balance_chart, funnel_chart, page
from .lib.codec import decode_image
from .lib.contact_sheet import contact_sheet
from .lib.errors import StageError, run_stage
from .lib.tables import load_faces, read_upstream, write_bytes_atomic

PLOTS = paths.plots_dir("data_card")
REPORT = paths.report_file("data_card")
THUMB = 96  # room for a caption of 16 characters: 8 of the id and the label
VERDICT = ["id", "kept", "reason"]


def read_params(params) -> dict:
    names = P.get(params, "rois.names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StageError(f"params: rois.names={names!r} must be a list of ROI names")
    cfg = {
        "thumbs": P.number(params, "data_card.thumbs_per_reason", int, lo=0, hi=32),
        "rois": names,
        "source": P.text(params, "ingest.source"),
        "split_by": P.choice(params, "ingest.split_by", ["id", "group"], default="id"),
    }
    P.check_unknown(params, ["data_card"])
    return cfg


def frame(path, columns, stage):
    return read_upstream(path, columns, stage).to_pandas()


def read_tables(rois) -> tuple:
    """(images, {chain stage: table}, {roi: manifest}, filter_quality's issue actions)."""
    images = frame(paths.IMAGES, VERDICT + ["source_key", "split", "group", "label"], "ingest")
    quality = frame(paths.FILTER_QUALITY, None, "filter_quality")  # every column: the is_<issue>_issue flags
    if not set(VERDICT) <= set(quality.columns):
        raise StageError(f"{paths.FILTER_QUALITY} lacks {'/'.join(VERDICT)}; rerun filter_quality")
    chain = {
        "ingest": images,
        "filter_quality": quality,
        "filter_masks": frame(paths.FILTER_MASKS, VERDICT, "filter_masks"),
        "filter_emotion": frame(paths.FILTER_EMOTION, VERDICT + ["label"], "filter_emotion"),
    }
    manifests = {r: frame(paths.roi_manifest(r), VERDICT + ["split", "domain", "label"], "extract_rois") for r in rois}
    metrics = paths.metrics_file("filter_quality")
    try:
        with open(metrics) as f:
            actions = json.load(f)["issues"]
    except (OSError, ValueError, KeyError) as err:
        raise StageError(f"{metrics} is missing or has no `issues` ({err}); rerun filter_quality") from None
    return images, chain, manifests, actions


def face_squares(ids) -> dict:
    """{id: the face square (the parser's box, the whole image without one)} of the ids the images table has."""
    out = {}
    for image_id, row in load_faces(ids, ["image"], ["face_bbox"]).items():
        if row.get("image") is not None:
            image = decode_image(row["image"])
            out[image_id] = face_crop(image, face_box(image, row.get("face_bbox")))
    return out


def write_strips(reasons, keys, thumbs) -> list:
    """Each reason's row with its source keys and strip (the `thumbs` lowest ids; none for ingest's rejects)."""
    pictured = [r for r in reasons if r["stage"] != "ingest" and thumbs]
    squares = face_squares({i for r in pictured for i in r["ids"][:thumbs]})
    rows = []
    for r in reasons:
        shown = [i for i in r["ids"][:thumbs] if i in squares] if r in pictured else []
        strip = card.plot_name(r["stage"], r["reason"]) if shown else None
        if strip:
            captions = [f"{i[:8]} {keys[i][1]}" for i in shown]
            contact_sheet([squares[i] for i in shown], captions, os.path.join(PLOTS, strip), cols=thumbs, thumb=THUMB)
        rows.append({**r, "keys": [keys[i][0] for i in r["ids"]], "strip": strip, "shown": len(shown)})
    return rows


def build(cfg) -> dict:
    images, chain, manifests, actions = read_tables(cfg["rois"])
    fe = chain["filter_emotion"]
    curated = set(fe.id[fe.kept])
    keys = {i: (k, label or "") for i, k, label in zip(images.id, images.source_key, images.label)}
    faces = images[images.kept]
    for manifest in manifests.values():
        manifest["domain"] = manifest.domain + " (" + manifest.label + ")"
    return {
        "source": cfg["source"],
        "split_by": cfg["split_by"],
        "funnel": card.funnel(chain, manifests),
        "reasons": write_strips(card.reasons(chain, manifests), keys, cfg["thumbs"]),
        "quality": card.quality_issues(chain["filter_quality"], actions, curated),
        "balance": card.crosstab(faces[faces.id.isin(curated)], "label", "split"),
        "roi_balance": {r: card.crosstab(m[m.kept], "domain", "split") for r, m in manifests.items()},
        "leakage": {
            "kept by ingest": card.leakage(faces),
            "curated (filter_emotion kept)": card.leakage(faces[faces.id.isin(curated)]),
        },
    }


def main():
    cfg = read_params(P.load())
    os.makedirs(PLOTS, exist_ok=True)
    for stale in glob.glob(os.path.join(PLOTS, "*.png")):
        os.unlink(stale)  # a reason that is gone must not leave last run's strip behind
    got = build(cfg)
    funnel_chart(got["funnel"], os.path.join(PLOTS, "funnel.png"))
    balance_chart(got["balance"], got["roi_balance"], os.path.join(PLOTS, "class_balance.png"))
    plots = os.path.relpath(PLOTS, os.path.dirname(REPORT))
    write_bytes_atomic(page(got, plots).encode(), REPORT)
    curated = got["funnel"][3]
    leak = got["leakage"]["curated (filter_emotion kept)"]
    print(
        f"data_card: {REPORT}: {curated['kept']} curated of {got['funnel'][0]['input']} rows, "
        f"{len(got['reasons'])} reject reasons, {leak['leaked']}/{leak['n_test']} curated test images leak"
    )


if __name__ == "__main__":
    run_stage(main)
