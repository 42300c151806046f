"""The training loop of one ROI's CycleGAN: epochs, resumable checkpoints, dvclive, and the stage's outputs.

A checkpoint is written atomically after each epoch with everything the rest of the run depends on (weights,
optimiser states, fake pools, RNG states, the per-epoch log and sample grids). A rerun with the same params and
data resumes from it and ends with the same weights as an uninterrupted run; a checkpoint whose fingerprint (a hash
of the params and the training data) differs is ignored. The dvclive directory is rebuilt from the checkpoint's log
on every run, so it always matches the weights.

Under torchrun every rank trains (stages/lib/distributed.py) and rank 0 alone writes the checkpoint and the outputs.

Run through the stage: `python -m stages.train <roi>`; in code:
    train_roi(read_config(params.load(), roi), Paths(roi))
"""

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from PIL import Image

from . import params as P
from . import paths
from .codec import decode_png, to_rgb
from .cyclegan import (
    CHECKPOINT_FORMAT,
    GRID_SAMPLES,
    LOSS_NAMES,
    CycleGAN,
    DeviceData,
    TrainConfig,
    lr_factor,
)
from .distributed import World
from .errors import StageError
from .expression import ExpressionNet, fit_expression
from .live import open_live
from .networks import generator_file
from .tables import read_frame, save_torch_atomic, write_json_atomic

# ---------------------------------------------------------------------------------------------------- checkpoints


def load_domains(manifest: str, cfg: TrainConfig):
    """train@roi's input: the kept train crops of domains A and B as uint8 (N, 3, S, S) arrays, sorted by id, and a
    hash of them."""
    if not os.path.exists(manifest):
        raise StageError(f"train {cfg.roi}: manifest {manifest} not found; run `dvc repro extract_rois` first")
    try:
        frame = read_frame(manifest, columns=["id", "split", "domain", "crop", "kept"])
    except (KeyError, ValueError) as err:  # pyarrow names the missing column
        raise StageError(f"train {cfg.roi}: {manifest} lacks a required column: {str(err).splitlines()[0]}") from None
    frame = frame[frame["kept"].fillna(False).astype(bool) & (frame["split"] == "train")]
    digest = hashlib.sha256()
    out = {}
    for domain in ("A", "B"):
        rows = frame[frame["domain"] == domain].sort_values("id", kind="stable")
        if rows.empty:
            raise StageError(f"train {cfg.roi}: no kept train rows for domain {domain} in {manifest}")
        crops = np.empty((len(rows), 3, cfg.size, cfg.size), np.uint8)
        for i, (row_id, data) in enumerate(zip(rows["id"], rows["crop"])):
            if data is None:
                raise StageError(f"train {cfg.roi}: kept row {row_id} has no crop")
            img = to_rgb(decode_png(data))[..., :3]
            if img.shape[:2] != (cfg.size, cfg.size):
                raise StageError(
                    f"train {cfg.roi}: crop of {row_id} is {img.shape[1]}x{img.shape[0]}, "
                    f"rois.side.{cfg.roi} says {cfg.size}"
                )
            crops[i] = img.transpose(2, 0, 1)
            digest.update(f"{domain}\0{row_id}\0".encode())
            digest.update(data)
        out[domain] = crops
    return out["A"], out["B"], digest.hexdigest()


def fingerprint(cfg: TrainConfig, data_hash: str, ranks: int = 1) -> str:
    """What a checkpoint must match to be resumed: the checkpoint format, every param, the training data, and the
    number of torchrun ranks (their summed gradients round differently; one process's fingerprint predates them)."""
    blob = {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "data": data_hash}
    if ranks > 1:
        blob["ranks"] = ranks
    blob = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _interned(obj):
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_interned(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_interned(v) for v in obj)
    return obj


def load_checkpoint(path, expected_hash, roi):
    """The checkpoint at `path` if it exists and matches `expected_hash`, else None (with a note why)."""
    if not os.path.exists(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file from an older layout or another tool: start over rather than fail
        print(f"train {roi}: ignoring unreadable checkpoint {path} ({type(err).__name__})", file=sys.stderr)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("fingerprint") != expected_hash:
        print(
            f"train {roi}: ignoring checkpoint {path} from other params, data or ranks; training from scratch",
            file=sys.stderr,
        )
        return None
    # Strings interned as the code's own literals are: pickle writes a string once per distinct object, so loaded
    # copies of "lr", "G", ... would make the next checkpoint's bytes differ from an uninterrupted run's although
    # its contents are equal.
    return _interned(ckpt)


def _png(arr: np.ndarray) -> torch.Tensor:
    # Stored as a uint8 tensor: `torch.load(weights_only=True)` accepts tensors, not arbitrary bytes objects.
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------------- loop


class Paths:
    """Where one ROI's training reads and writes."""

    def __init__(self, roi, manifest=None, model_dir=None, live_dir=None, metrics=None):
        self.manifest = manifest or paths.roi_manifest(roi)
        self.model_dir = model_dir or paths.generator_dir(roi)
        self.live_dir = live_dir or paths.live_dir(roi)
        self.metrics = metrics or paths.metrics_file(f"train_{roi}")
        self.generator = os.path.join(self.model_dir, "generator_AB.pt")
        self.checkpoint = os.path.join(self.model_dir, "checkpoint.pt")


def _open_live(live_dir, history, grids):
    """A fresh dvclive run in `live_dir`, replaying the epochs the checkpoint already holds."""
    live = open_live(live_dir)
    for record, grid in zip(history, grids):
        _log_epoch(live, record, Image.open(io.BytesIO(grid.numpy().tobytes())))
    return live


def _log_epoch(live, record, grid_image):
    for name in LOSS_NAMES:
        live.log_metric(f"loss/{name}", record[name])
    live.log_metric("lr", record["lr"])
    # One name per ROI, overwritten each epoch: `dvc plots show` gets one grid per ROI, the latest; every epoch's grid
    # stays in the checkpoint ("grids").
    live.log_image("samples.png", grid_image)
    live.next_step()


def _expression_net(cfg: TrainConfig, crops_a, crops_b, device, ckpt, world: World):
    """The frozen expression classifier and its report: from the checkpoint when resuming (so a resumed run uses
    the very same weights), else fitted on the train crops (every rank then gets rank 0's weights); (None, {})
    when lambda_expression is 0."""
    if cfg.lambda_expression <= 0:
        return None, {}
    if ckpt is not None and ckpt.get("expression") is not None:
        net = ExpressionNet().to(device)
        net.load_state_dict(ckpt["expression"])
        return net.eval().requires_grad_(False), dict(ckpt["expression_report"])
    net, report = fit_expression(crops_a, crops_b, device, cfg.seed)
    world.broadcast(net)
    if world.main:
        print(
            f"train {cfg.roi}: expression classifier, held-out train accuracy {report['expression_holdout_accuracy']}"
            f" ({report['expression_n_fit']} crops fit, {report['expression_n_holdout']} held out)",
            file=sys.stderr,
        )
    return net, report


def train_epoch(cfg: TrainConfig, model: CycleGAN, data: DeviceData, epoch: int, after_step=None) -> dict:
    """One epoch of optimisation steps over the planned batches; returns the epoch's mean losses and last LR."""
    from tqdm import tqdm

    total_steps = cfg.epochs * data.steps_per_epoch
    decay_steps = cfg.epochs_decay * data.steps_per_epoch
    sums = {name: torch.zeros((), device=model.device) for name in LOSS_NAMES}
    bar = tqdm(
        range(data.steps_per_epoch),
        desc=f"train {cfg.roi} {epoch + 1}/{cfg.epochs}",
        file=sys.stderr,
        leave=False,
        mininterval=1.0,
        disable=not model.world.main,
    )
    for step in bar:
        global_step = epoch * data.steps_per_epoch + step
        lr = cfg.lr * lr_factor(global_step, total_steps, decay_steps)
        model.set_lr(lr)
        losses = model.step(*data.batch(step), progress=global_step / total_steps)
        for name in LOSS_NAMES:
            sums[name] += losses[name]
        if after_step is not None:
            after_step(epoch, step)
    bar.close()
    sums = model.world.average(sums)  # each rank's losses are its slice's: the mean of them is the global batch's
    record = {name: float(value) / data.steps_per_epoch for name, value in sums.items()}
    record.update(epoch=epoch, lr=lr)
    return record


def run_metrics(cfg: TrainConfig, n_a: int, n_b: int, steps: int, history: list, seconds_per_step) -> dict:
    """metrics/train_<roi>.json: the data, the run, and the losses of the first and last epochs."""
    return {
        "roi": cfg.roi, "n_train_A": n_a, "n_train_B": n_b, "epochs": cfg.epochs, "steps": steps,
        "device": cfg.device, "final": {k: history[-1][k] for k in LOSS_NAMES},
        "cycle_first_epoch": history[0]["cycle"], "cycle_last_epoch": history[-1]["cycle"],
        "seconds_per_step": seconds_per_step, "generator": cfg.generator, "ema": cfg.ema,
    }  # fmt: skip


def train_roi(cfg: TrainConfig, where: Paths, after_step=None, world=None) -> dict:
    """Train (or resume) the CycleGAN for one ROI and write its outputs; returns the metrics written.

    `after_step(epoch, step)` is called after every optimisation step (tests use it to interrupt a run). `world`:
    this process's rank under torchrun (stages/lib/distributed.py); rank 0 alone writes, every rank resumes.
    """
    world = world or World()
    _check_ranks(cfg, world)
    device = world.device(cfg.device)
    P.seed_everything(cfg.seed)
    crops_a, crops_b, data_hash = load_domains(where.manifest, cfg)
    expected = fingerprint(cfg, data_hash, world.size)
    ckpt = load_checkpoint(where.checkpoint, expected, cfg.roi)
    expression, expression_report = _expression_net(cfg, crops_a, crops_b, device, ckpt, world)
    model = CycleGAN(cfg, device, expression=expression, world=world)
    data = DeviceData(crops_a, crops_b, cfg, device, model.channels_last, world)
    data_gen = torch.Generator().manual_seed(cfg.seed + 1)
    fixed = [torch.from_numpy(c[:GRID_SAMPLES]).to(device).float() / 127.5 - 1.0 for c in (crops_a, crops_b)]

    history, grids, start_epoch = [], [], 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        data_gen.set_state(ckpt["data_rng"])
        history, grids, start_epoch = list(ckpt["history"]), list(ckpt["grids"]), int(ckpt["epoch"])
        if world.main:
            print(f"train {cfg.roi}: resuming after epoch {start_epoch}/{cfg.epochs}", file=sys.stderr)
    live = _open_live(where.live_dir, history, grids) if world.main else None

    total_steps = cfg.epochs * data.steps_per_epoch
    started, steps_run = time.perf_counter(), 0
    for epoch in range(start_epoch, cfg.epochs):
        data.plan_epoch(data_gen)
        record = train_epoch(cfg, model, data, epoch, after_step)
        steps_run += data.steps_per_epoch
        history.append(record)
        if not world.main:
            continue
        grid = model.sample_grid(*fixed)
        grids.append(_png(grid))
        expression_state = None if expression is None else expression.state_dict()
        save_torch_atomic(
            {"fingerprint": expected, "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
             "data_rng": data_gen.get_state(), "expression": expression_state, "expression_report": expression_report,
             "history": history, "grids": grids}, where.checkpoint)  # fmt: skip
        _log_epoch(live, record, Image.fromarray(grid))
        print(
            f"train {cfg.roi} epoch {epoch + 1}/{cfg.epochs}: " + " ".join(f"{k}={record[k]:.4f}" for k in LOSS_NAMES),
            file=sys.stderr,
        )
    seconds = time.perf_counter() - started
    world.check_same_weights(model.nets, cfg.roi)
    per_step = seconds / steps_run if steps_run else None
    metrics = run_metrics(cfg, len(crops_a), len(crops_b), total_steps, history, per_step)
    metrics.update(expression_report)
    if world.size > 1:
        metrics["ranks"] = world.size
    if world.main:
        _write_outputs(cfg, model, where, live, metrics)
    return metrics


def _check_ranks(cfg: TrainConfig, world: World):
    if cfg.batch % world.size:
        raise StageError(
            f"train {cfg.roi}: train.batch.{cfg.roi}={cfg.batch} does not split over {world.size} ranks; "
            f"use a multiple of {world.size} or another number of processes"
        )


def _write_outputs(cfg: TrainConfig, model: CycleGAN, where: Paths, live, metrics: dict):
    live.end()
    config = dict(roi=cfg.roi, size=cfg.size, value_range=[-1.0, 1.0], direction="A->B", **model.nets["G_AB"].config)
    save_torch_atomic(generator_file(config, model.generator_AB().state_dict()), where.generator)
    write_json_atomic(metrics, where.metrics)
