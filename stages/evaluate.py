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
The faces stream past evaluate.batch at a time (stages/lib/eval_faces.py reads them, stages/lib/eval_batch.py scores
a batch); only per-face numbers are kept, reduced in id order by stages/lib/evaluation.py, which defines them.
"""

import os
import sys

import numpy as np
from tqdm import tqdm

from .lib import params as P
from .lib import paths
from .lib.curator import curator_classifier
from .lib.errors import StageError, run_stage
from .lib.eval_faces import photo_batches, read_inputs, sample_sheet, stream_faces
from .lib.evaluation import EvalConfig, Evaluation, Judges
from .lib.geometry import GeometryJudge, fit_threshold
from .lib.judge import load_judge
from .lib.live import log_with_intervals
from .lib.networks import read_generator
from .lib.overlay import BLENDS, COLOR_MATCHES
from .lib.rois import ROI_NAMES
from .lib.tables import write_json_atomic

EDIT_NAMES = ROI_NAMES + ("combined",)


def read_params(params) -> dict:
    source, target = P.emotions(params)
    config = EvalConfig(
        color_match=P.choice(params, "evaluate.color_match", COLOR_MATCHES),
        blend=P.choice(params, "evaluate.blend", BLENDS),
        n_samples=P.number(params, "evaluate.samples", int, lo=0, hi=64, default=8),
        kid_subsets=P.number(params, "evaluate.kid_subsets", int, lo=1, hi=10000, default=100),
        kid_subset_size=P.number(params, "evaluate.kid_subset_size", int, lo=2, default=1000),
        seed=P.number(params, "evaluate.seed", int, lo=0, default=0),
        resamples=P.number(params, "evaluate.resamples", int, lo=100, hi=100000, default=1000),
        batch=P.number(params, "evaluate.batch", int, lo=1, hi=4096, default=64),
    )
    workers = P.number(params, "evaluate.workers", int, lo=0, hi=1024, default=0) or P.usable_cores()
    p = {
        "source": source,
        "target": target,
        "config": config,
        "batch": config.batch,
        "identity": P.flag(params, "evaluate.identity", default=True),
        "geometry": P.flag(params, "evaluate.geometry", default=True),
        "workers": workers,
        "device": P.device(params, "evaluate.device"),
    }
    P.check_unknown(params, ["evaluate"])
    return p


def geometry_judge(roi: str, train: dict, batch: int):
    """The landmark judge and its cut, fitted on the real train faces of both domains (never on test faces), their
    photos streamed `batch` at a time."""
    judge = GeometryJudge(roi)
    scores = {}
    for d in ("A", "B"):
        batches = tqdm(photo_batches(train[d], batch), desc=f"geometry cut: train {d}", unit="batch", leave=False)
        scores[d] = np.concatenate([judge.scores(images) for images in batches] or [np.zeros(0)])
    try:
        cut = fit_threshold(scores["A"], scores["B"])
    except ValueError:
        raise StageError(
            "the geometry judge found no face among the train faces of one domain; set evaluate.geometry: false"
        ) from None
    return judge, cut


def streamed_run(edit: str, p: dict, inputs) -> Evaluation:
    """The Evaluation of `edit` under params `p` (read_params), every test face of `inputs` streamed past it."""
    device = p["device"]
    generators = [read_generator(paths.generator_file(r), r, device, inputs.crop_side(r)) for r in inputs.parts]
    curator, classify = curator_classifier(paths.CURATOR, p["source"], p["target"], device)
    judge = load_judge(device=device)
    judges = Judges(judge=judge, curator=classify, identity=p["identity"], identity_workers=p["workers"])
    if p["geometry"]:
        judges.geometry, judges.geometry_cut = geometry_judge(inputs.geometry_roi, inputs.train, p["batch"])
    print(
        f"evaluate@{edit}: {len(inputs.test_a)} test faces ({p['source']}), {len(inputs.test_b)} real "
        f"{p['target']} crops, color_match={p['config'].color_match}, blend={p['config'].blend}, "
        f"device={device}, batch={p['batch']}",
        file=sys.stderr,
    )
    run = Evaluation(judges, p["source"], p["target"], p["config"], inputs.test_a, len(inputs.test_b), inputs.real_crop)
    stream_faces(inputs, run, generators, curator.input == "grey_masks", device, p["batch"])
    return run


def evaluate(edit: str):
    p = read_params(P.load())
    P.pin_torch_threads()
    P.seed_everything(p["config"].seed)
    with read_inputs(edit) as inputs:
        metrics, picks = streamed_run(edit, p, inputs).result()
    write_json_atomic(metrics, os.path.join(paths.eval_dir(edit), "metrics.json"))
    log_with_intervals(metrics, paths.live_dir("evaluate", edit))
    # Pictures live under plots/ so that eval/ holds only metrics (dvc metrics reads every file of a listed folder).
    sample_sheet(picks, os.path.join(paths.plots_dir("evaluate"), f"{edit}.png"))
    ci = metrics["transfer_gain_ci"]
    print(
        f"evaluate@{edit}: transfer_gain={metrics['transfer_gain']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
        f"(oracle {metrics.get('oracle_transfer_gain')}), identity_kept_rate={metrics['identity_kept_rate']}, "
        f"geometry_gain={metrics['geometry_gain']}, outside_changed_px={metrics['outside_changed_px']}",
        file=sys.stderr,
    )


def main(argv):
    if len(argv) != 1 or argv[0] not in EDIT_NAMES:
        raise StageError(f"usage: python -m stages.evaluate <roi>, with <roi> one of {', '.join(EDIT_NAMES)}")
    try:
        evaluate(argv[0])
    except StageError as err:
        raise StageError(f"evaluate@{argv[0]}: {err}") from None


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
