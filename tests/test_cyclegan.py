"""Training: params validation, data loading, device augmentation, LR schedule, determinism, resume, learning."""

import copy
import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages.lib import params as P
from stages.lib.cyclegan import DeviceData, lr_factor, param_keys, read_config
from stages.lib.errors import StageError
from stages.lib.training import Paths, load_domains, train_roi
from tests.helpers.synthetic_rois import SIZE, TINY, write_manifest

ROOT = Path(__file__).resolve().parent.parent


def tiny_params(**train):
    params = copy.deepcopy(P.load(str(ROOT / "params.yaml")))
    params["rois"]["side"]["mouth"] = SIZE
    params["train"].update(copy.deepcopy(TINY))
    params["train"].update(train)
    return params


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("rois") / "mouth.parquet", size=SIZE, n_train=12)


def run(tmp_path, manifest, params=None, name="run", after_step=None):
    cfg = read_config(params or tiny_params(), "mouth")
    out = tmp_path / name
    paths = Paths(
        "mouth",
        manifest=str(manifest),
        model_dir=str(out / "model"),
        live_dir=str(out / "live"),
        metrics=str(out / "metrics.json"),
    )
    metrics = train_roi(cfg, paths, after_step=after_step)
    return metrics, torch.load(paths.generator, weights_only=True), paths


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- params and data


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("precision", "fp16", "train.precision"),
        ("epochs_decay", {"mouth": 9}, "train.epochs_decay.mouth"),
        ("batch", {"mouth": 0}, "train.batch.mouth"),
        ("flip", "yes", "train.flip"),
        ("n_layers", {"mouth": 4}, "train.n_layers.mouth"),
        ("n_down", {"mouth": 0}, "train.n_down.mouth"),
        ("lambda_cycle", {"mouth": -1.0}, "train.lambda_cycle.mouth"),
        # one number where one per ROI is wanted (the cycle weight was one number for all ROIs until 2026-12-02)
        ("lambda_cycle", 20.0, "train.lambda_cycle is 20.0, not a mapping: train.lambda_cycle.mouth is wanted"),
    ],
)
def test_bad_params_name_the_key(key, value, words):
    with pytest.raises(StageError, match=words.replace(".", r"\.")):
        read_config(tiny_params(**{key: value}), "mouth")


def test_roi_size_must_suit_the_downsamplings():
    params = tiny_params(n_down={"mouth": 1})
    params["rois"]["side"]["mouth"] = 24
    assert read_config(params, "mouth").n_down == 1
    params["train"]["n_down"]["mouth"] = 4
    with pytest.raises(StageError, match=r"rois\.side\.mouth=24 must be divisible by 16 \(train\.n_down\.mouth=4"):
        read_config(params, "mouth")


def test_the_cycle_weight_is_read_per_roi():
    params = copy.deepcopy(P.load(str(ROOT / "params.yaml")))
    params["train"]["lambda_cycle"] = {"eyes": 1.0, "mouth": 20.0, "face": 3.0}
    assert [read_config(params, roi).lambda_cycle for roi in ("eyes", "mouth", "face")] == [1.0, 20.0, 3.0]


def test_unknown_roi_and_missing_key():
    with pytest.raises(StageError, match="unknown roi 'nose'"):
        read_config(tiny_params(), "nose")
    params = tiny_params()
    del params["train"]["n_blocks"]["mouth"]
    with pytest.raises(StageError, match=r"train\.n_blocks\.mouth is missing"):
        read_config(params, "mouth")


def test_dvc_yaml_declares_exactly_the_params_train_reads():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    declared = [k.replace("${item}", "mouth") for k in stage["params"]]
    assert sorted(declared) == sorted(param_keys("mouth"))
    # and every one of them exists in params.yaml
    params = P.load(str(ROOT / "params.yaml"))
    for key in param_keys("mouth"):
        P.get(params, key)


def test_load_domains_uses_only_kept_train_rows(manifest):
    a, b, digest = load_domains(str(manifest), read_config(tiny_params(), "mouth"))
    assert a.shape == b.shape == (12, 3, SIZE, SIZE) and a.dtype == np.uint8
    assert len(digest) == 64
    # B (smiles) has bright teeth where A has only skin: its brightest pixels are brighter on average.
    assert b.max(axis=(1, 2, 3)).mean() > a.max(axis=(1, 2, 3)).mean()


def test_missing_manifest_and_empty_domain_are_one_line_errors(tmp_path):
    cfg = read_config(tiny_params(), "mouth")
    with pytest.raises(StageError, match=r"train mouth: manifest .*nope\.parquet not found"):
        load_domains(str(tmp_path / "nope.parquet"), cfg)
    only_a = write_manifest(tmp_path / "a.parquet", size=SIZE, n_train=4, domains=("A",))
    with pytest.raises(StageError, match="train mouth: no kept train rows for domain B"):
        load_domains(str(only_a), cfg)
    wrong = write_manifest(tmp_path / "w.parquet", size=SIZE * 2, n_train=4)
    with pytest.raises(StageError, match="rois.side.mouth says 16"):
        load_domains(str(wrong), cfg)


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train", "mouth"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: train mouth: manifest data/rois/mouth.parquet not found; run `dvc repro extract_rois` first"
    ]


def planned_data(manifest, seed, **train):
    """The manifest's domain A and a CPU DeviceData of both domains with one epoch planned from `seed`."""
    cfg = read_config(tiny_params(**train), "mouth")
    a, b, _ = load_domains(str(manifest), cfg)
    data = DeviceData(a, b, cfg, torch.device("cpu"))
    data.plan_epoch(torch.Generator().manual_seed(seed))
    return a, data


def test_device_batches_gather_flip_and_scale(manifest):
    a, data = planned_data(manifest, 0, flip=True, jitter=0.0)
    assert data.steps_per_epoch == 3
    order, _, flips = data.plan[0]
    assert sorted(order.flatten().tolist()) == list(range(12))  # one pass over the data
    real_a, _ = data.batch(1)
    expected = torch.from_numpy(a[order[1]]).float() / 127.5 - 1
    expected = torch.where(flips[1][:, None, None, None], expected.flip(3), expected)
    assert torch.allclose(real_a, expected) and 0 < flips.sum() < 12


def test_jitter_shifts_within_the_padding(manifest):
    a, data = planned_data(manifest, 1, flip=False, jitter=0.25)
    order, offsets, _ = data.plan[0]
    assert offsets.min() >= 0 and offsets.max() <= 8 and len(offsets.unique()) > 1
    offsets[0, 0] = torch.tensor([4, 4])  # an offset equal to the padding is no shift at all ...
    offsets[0, 1] = torch.tensor([1, 7])  # ... and this one moves the crop by (-3, +3)
    real_a, _ = data.batch(0)
    assert real_a.shape == (4, 3, SIZE, SIZE)
    assert torch.allclose(real_a[0], torch.from_numpy(a[order[0, 0]]).float() / 127.5 - 1)
    j = 1
    dy, dx = (offsets[0, j] - 4).tolist()
    src = torch.from_numpy(a[order[0, j]]).float() / 127.5 - 1
    # inside the image the crop is the source moved by (dy, dx)
    y0, y1, x0, x1 = max(0, -dy), SIZE - max(0, dy), max(0, -dx), SIZE - max(0, dx)
    assert torch.allclose(real_a[j][:, y0:y1, x0:x1], src[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx])


def test_lr_constant_then_linear_to_zero():
    total, decay = 10, 4
    lrs = [lr_factor(s, total, decay) for s in range(total)]
    assert lrs[:7] == [1.0] * 7
    assert lrs[6:] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(total, total, decay) == 0.0 and lr_factor(3, total, 0) == 1.0


# ---------------------------------------------------------------------------------------------- training


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, manifest):
    m1, g1, paths = run(tmp_path, manifest, name="a")
    _, g2, _ = run(tmp_path, manifest, name="b")
    _, g3, _ = run(tmp_path, manifest, tiny_params(seed=1), name="c")
    assert same_weights(g1["state_dict"], g2["state_dict"])
    assert not same_weights(g1["state_dict"], g3["state_dict"])
    cfg = g1["config"]
    assert (cfg["ngf"], cfg["n_blocks"], cfg["size"]) == (2, 1, SIZE)
    # outputs: metrics, dvclive curves per epoch and one sample grid per epoch
    assert m1["steps"] == 9 and set(m1["final"]) == {
        "G",
        "G_adv",
        "D_A",
        "D_B",
        "cycle",
        "identity",
        "expression",
        "mask_area",
    }
    live = Path(paths.live_dir)
    assert len((live / "plots/metrics/loss/cycle.tsv").read_text().splitlines()) == 1 + 3
    assert (live / "plots/metrics/lr.tsv").exists() and (live / "metrics.json").exists()
    grids = sorted((live / "plots/images").rglob("*.png"))
    assert [g.name for g in grids] == ["samples.png"]  # the latest epoch's; every epoch's is in the checkpoint
    from PIL import Image

    assert Image.open(grids[0]).size == (6 * SIZE + 4, 4 * SIZE)
    ckpt = torch.load(Path(paths.checkpoint), weights_only=True)
    assert len(ckpt["grids"]) == 3
    last = Image.open(io.BytesIO(ckpt["grids"][-1].numpy().tobytes()))
    assert np.array_equal(np.asarray(Image.open(grids[0])), np.asarray(last))


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, manifest):
    # the checkpoint carries the expression classifier and the weights' moving average too
    params = tiny_params(lambda_expression={"mouth": 1.0}, ema={"mouth": 0.9})
    _, reference, _ = run(tmp_path, manifest, params, name="ref")

    def stop(epoch, step):
        if (epoch, step) == (1, 1):  # mid-epoch, after one finished epoch was checkpointed
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path, manifest, params, name="cut", after_step=stop)
    ckpt = torch.load(tmp_path / "cut/model/checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["expression"] is not None
    _, resumed, paths = run(tmp_path, manifest, params, name="cut")
    assert same_weights(reference["state_dict"], resumed["state_dict"])
    # the dvclive log is whole again: one row per epoch, not one per run
    assert len(Path(paths.live_dir, "plots/metrics/loss/G.tsv").read_text().splitlines()) == 1 + 3


def test_the_written_generator_is_the_moving_average_of_its_iterates(tmp_path, manifest):
    """With train.ema the stage writes sum_k w_k theta_k over G_AB's weights after each step (theta_0 the initial
    ones), w from the warmed-up decays d_t = min(ema, (1 + t) / (10 + t)); without it, the last weights."""
    from stages.lib.cyclegan import CycleGAN

    decay = 0.9
    cfg = read_config(tiny_params(ema={"mouth": decay}), "mouth")
    a, b, _ = load_domains(str(manifest), cfg)
    model = CycleGAN(cfg, torch.device("cpu"))
    data = DeviceData(a, b, cfg, torch.device("cpu"))
    data.plan_epoch(torch.Generator().manual_seed(0))
    iterates = [{k: v.double().clone() for k, v in model.nets["G_AB"].state_dict().items()}]
    for step in range(6):
        model.step(*data.batch(step % data.steps_per_epoch))
        iterates.append({k: v.double().clone() for k, v in model.nets["G_AB"].state_dict().items()})
    decays = [min(decay, (1 + t) / (10 + t)) for t in range(1, len(iterates))]
    weights = [math.prod(decays)] + [(1 - decays[k - 1]) * math.prod(decays[k:]) for k in range(1, len(iterates))]
    assert sum(weights) == pytest.approx(1.0)
    written = model.generator_AB().state_dict()
    for name, value in written.items():
        expected = sum(w * it[name] for w, it in zip(weights, iterates))
        assert torch.allclose(value.double(), expected, atol=1e-6), name
    assert not same_weights(written, model.nets["G_AB"].state_dict())
    plain = CycleGAN(read_config(tiny_params(ema={"mouth": 0.0}), "mouth"), torch.device("cpu"))
    assert plain.generator_AB() is plain.nets["G_AB"] and "ema_G_AB" not in plain.state_dict()


def test_stale_checkpoint_from_other_params_is_not_resumed(tmp_path, manifest, capfd):
    _, first, _ = run(tmp_path, manifest, tiny_params(lr=1e-3), name="x")
    _, fresh, _ = run(tmp_path, manifest, tiny_params(lr=5e-4), name="fresh")
    _, over, _ = run(tmp_path, manifest, tiny_params(lr=5e-4), name="x")  # finds the lr=1e-3 checkpoint
    assert "ignoring checkpoint" in capfd.readouterr().err
    assert same_weights(fresh["state_dict"], over["state_dict"])
    assert not same_weights(first["state_dict"], over["state_dict"])


def test_killed_process_resumes_to_the_same_weights(tmp_path, manifest):
    """A real SIGKILL mid-epoch, then a rerun of the stage command, against an uninterrupted run."""
    # batch 1: 12 steps an epoch, so that the kill lands in the second of four epochs even on a fast machine
    params = tiny_params(epochs={"mouth": 4}, epochs_decay={"mouth": 2}, batch={"mouth": 1})
    _, reference, ref_paths = run(tmp_path, manifest, params, name="ref")
    work = tmp_path / "proj"
    (work / "data/rois").mkdir(parents=True)
    os.symlink(manifest, work / "data/rois/mouth.parquet")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "stages.train", "mouth"]
    ckpt = work / "models/cyclegan/mouth/checkpoint.pt"
    proc = subprocess.Popen(cmd, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # the first epoch is checkpointed: this lands in the second
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (work / "models/cyclegan/mouth/generator_AB.pt").exists()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    resumed_from = [line for line in done.stderr.splitlines() if "resuming after epoch" in line]
    assert resumed_from and not resumed_from[0].endswith("4/4")
    resumed = torch.load(work / "models/cyclegan/mouth/generator_AB.pt", weights_only=True)
    assert same_weights(reference["state_dict"], resumed["state_dict"])
    # and the same bytes, checkpoint included (DVC sees no change)
    assert (work / "models/cyclegan/mouth/generator_AB.pt").read_bytes() == Path(ref_paths.generator).read_bytes()
    assert ckpt.read_bytes() == Path(ref_paths.checkpoint).read_bytes()


def test_cycle_loss_falls(tmp_path):
    """A slightly bigger tiny net on the synthetic mouths: reconstruction through both generators improves.

    (Whether A->B draws smiles needs a few hundred steps at 32 px; see bench/README.md for that run.)
    """
    manifest = write_manifest(tmp_path / "m.parquet", size=SIZE, n_train=24, seed=3)
    params = tiny_params(epochs={"mouth": 8}, epochs_decay={"mouth": 4}, ngf=4, ndf=4, batch={"mouth": 4})
    metrics, _, paths = run(tmp_path, manifest, params)
    assert metrics["cycle_last_epoch"] < 0.7 * metrics["cycle_first_epoch"]
    cycle = [
        float(line.split("\t")[-1])
        for line in Path(paths.live_dir, "plots/metrics/loss/cycle.tsv").read_text().splitlines()[1:]
    ]
    assert len(cycle) == 8 and cycle[-1] == pytest.approx(metrics["cycle_last_epoch"])


def test_a_trained_warp_generator_moves_pixels_along_its_flow(tmp_path, manifest):
    """train.generator=warp through the CycleGAN loop: the flow head leaves zero, and the saved generator rebuilds
    the warp (its flow included) and edits a crop."""
    from stages.lib.networks import load_generator

    metrics, saved, paths = run(tmp_path, manifest, tiny_params(generator="warp"))
    assert metrics["generator"] == "warp" and saved["config"]["kind"] == "warp"
    assert saved["state_dict"]["flow.weight"].abs().sum() > 0
    g = load_generator(paths.generator)
    crops, _, _ = load_domains(str(manifest), read_config(tiny_params(generator="warp"), "mouth"))
    x = torch.from_numpy(crops[:4]).float() / 127.5 - 1
    with torch.no_grad():
        flow = g.flow(g.net[: g.bottleneck_end](x))
        assert flow.abs().max() > 0 and not torch.equal(g(x), x)


def test_gpu_path_options_agree_with_the_plain_step(manifest):
    """The CUDA-only switches (channels_last, bf16 autocast) exercised on CPU: same losses, up to bf16 rounding."""
    from stages.lib.cyclegan import CycleGAN
    from stages.lib.expression import fit_expression

    cfg = read_config(tiny_params(lambda_expression={"mouth": 1.0}), "mouth")
    a, b, _ = load_domains(str(manifest), cfg)
    expression = fit_expression(a, b, "cpu", 0)[0]

    def first_step(channels_last, bf16):
        model = CycleGAN(cfg, torch.device("cpu"), expression=expression)
        if channels_last:
            model.channels_last = True
            for net in model.nets.values():
                net.to(memory_format=torch.channels_last)
        model.autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=bf16)
        data = DeviceData(a, b, cfg, torch.device("cpu"), channels_last)
        data.plan_epoch(torch.Generator().manual_seed(0))
        real_a, real_b = data.batch(0)
        assert real_a.is_contiguous(memory_format=torch.channels_last) == channels_last
        losses = model.step(real_a, real_b)
        assert model.pool_A.images.dtype == torch.float32
        return torch.stack([losses[k] for k in ("G", "D_A", "D_B", "cycle", "identity", "expression")])

    plain = first_step(False, False)
    assert torch.allclose(first_step(True, False), plain, rtol=1e-4)
    bf16 = first_step(False, True)
    assert torch.isfinite(bf16).all() and torch.allclose(bf16, plain, rtol=0.05)


def test_expression_classifier_is_fitted_on_kept_train_crops_only(tmp_path, manifest, monkeypatch):
    from stages.lib import training
    from stages.lib.codec import decode_png
    from stages.lib.tables import read_frame

    seen = []
    fit = training.fit_expression

    def spy(crops_a, crops_b, device, seed):
        seen.append((crops_a.copy(), crops_b.copy()))
        return fit(crops_a, crops_b, device, seed)

    monkeypatch.setattr(training, "fit_expression", spy)
    params = tiny_params(lambda_expression={"mouth": 1.0})
    metrics, _, _ = run(tmp_path, manifest, params)
    ((got_a, got_b),) = seen
    train_a, train_b, _ = load_domains(str(manifest), read_config(params, "mouth"))
    assert np.array_equal(got_a, train_a) and np.array_equal(got_b, train_b)
    frame = read_frame(str(manifest), columns=["split", "crop", "kept"])
    others = [
        decode_png(c).transpose(2, 0, 1)
        for c, s, k in zip(frame.crop, frame.split, frame.kept)
        if c is not None and (s != "train" or not k)
    ]
    assert others and not any((got == crop).all(axis=(1, 2, 3)).any() for crop in others for got in (got_a, got_b))
    # flat lines vs open smiles: the held-out fifth of the train crops is told apart
    assert metrics["expression_n_holdout"] > 0 and metrics["expression_holdout_accuracy"] >= 0.9
    assert metrics["final"]["expression"] > 0


def test_no_expression_classifier_without_its_loss(tmp_path, manifest, monkeypatch):
    from stages.lib import training

    monkeypatch.setattr(training, "fit_expression", lambda *a: pytest.fail("fitted with lambda_expression 0"))
    metrics, _, _ = run(tmp_path, manifest, tiny_params(lambda_expression={"mouth": 0.0}))
    assert "expression_holdout_accuracy" not in metrics and metrics["final"]["expression"] == 0
