"""Step time of our CycleGAN training path against an independent reference-style step, side by side on one machine.

Ours: `CycleGAN.step` (stages/lib/cyclegan.py) fed by `DeviceData`: both domains resident on the device as uint8,
batches gathered and augmented there; bf16 autocast + channels_last + fused Adam on CUDA (torch.compile with
--compile).
Reference: bench/reference_cyclegan.py, a second implementation of the published CycleGAN step (Zhu et al. 2017,
as junyanz/pytorch-CycleGAN-and-pix2pix documents it) that shares no code with stages.lib.cyclegan or
stages.lib.networks: its own nets, losses, per-image pool and step, fed the published way: a torch DataLoader
whose dataset decodes each sample's PNG and shifts/flips it on the host, batches copied to the device, fp32, NCHW,
plain Adam.

Like for like: both are built from params.yaml's train config for the ROI (size, batch, ngf, ndf, n_blocks,
n_layers, n_down, lr, beta1, lambda_cycle, lambda_identity, pool_size), but our side is forced to
`generator: resnet`, `upsample: transpose` and lambda_expression 0, because the published model has neither our
identity-initialised `residual` head (the demo default) nor the expression-classifier loss. `--check` verifies the
pairing: equal parameter counts, the same forward output with our weights copied in layer for layer, and the same
losses over a few training steps from the same weights and batches.

Run from the project root:
    python bench/train.py --check               # the reference is what it says (CPU, seconds)
    python bench/train.py                       # mouth ROI, params.yaml's train config, synthetic crops
    python bench/train.py --roi face --manifest data/rois/face.parquet --steps 30 --device cuda
Rounds of `--steps` steps alternate between the two paths (so load from other processes hits both alike); the
median step time of each is reported (wall, and CPU time of this process, which other jobs on a shared machine
disturb less), and ratio = ours / reference (lower is better; the goal on GPU is <= 0.5).
"""

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.reference_cyclegan import ReferenceCycleGAN, UnalignedPngs  # noqa: E402
from stages.lib import params as P  # noqa: E402
from stages.lib.codec import decode_png, to_rgb  # noqa: E402
from stages.lib.cyclegan import CycleGAN, DeviceData, read_config  # noqa: E402
from stages.lib.tables import read_frame  # noqa: E402


def load_pngs(manifest, size, n_synthetic):
    if manifest:
        frame = read_frame(manifest, columns=["split", "domain", "crop", "kept"])
        frame = frame[frame["kept"].astype(bool) & (frame["split"] == "train")]
        return [list(frame[frame["domain"] == d]["crop"]) for d in ("A", "B")], manifest
    from tests.helpers.synthetic_rois import write_manifest

    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(os.path.join(tmp, "m.parquet"), size=size, n_train=n_synthetic)
        frame = read_frame(path, columns=["split", "domain", "crop", "kept"])
    frame = frame[frame["kept"].astype(bool) & (frame["split"] == "train")]
    return [list(frame[frame["domain"] == d]["crop"]) for d in ("A", "B")], f"synthetic ({n_synthetic}/domain)"


def like_for_like_config(params, roi):
    """params.yaml's train config for `roi`, with our model set to what the published one is: the resnet output head,
    transposed-convolution upsampling, no expression loss."""
    train = params["train"]
    train["generator"], train["upsample"] = "resnet", "transpose"
    train["lambda_expression"][roi] = 0.0
    return read_config(params, roi)


def reference_for(cfg, device, seed=0):
    """The reference built from our config's sizes and loss weights (lambda_A = lambda_B = lambda_cycle; our
    lambda_identity is already relative to lambda_cycle, as the published one is)."""
    return ReferenceCycleGAN(
        ngf=cfg.ngf,
        ndf=cfg.ndf,
        n_blocks=cfg.n_blocks,
        n_layers=cfg.n_layers,
        n_down=cfg.n_down,
        lr=cfg.lr,
        beta1=cfg.beta1,
        lambda_A=cfg.lambda_cycle,
        lambda_B=cfg.lambda_cycle,
        lambda_identity=cfg.lambda_identity,
        pool_size=cfg.pool_size,
        device=device,
        seed=seed,
    )


# Ours names a discriminator after the domain it judges, the published code after the generator it answers.
NET_PAIRS = (("G_AB", "G_A"), ("G_BA", "G_B"), ("D_B", "D_A"), ("D_A", "D_B"))


@torch.no_grad()
def copy_weights(ours, ref):
    """Our four nets' weights into the reference's, tensor by tensor in order (the shapes are checked first)."""
    for mine, theirs in NET_PAIRS:
        for p, q in zip(ours.nets[mine].parameters(), getattr(ref, theirs).parameters()):
            q.copy_(p)


def check_reference(cfg, batches):
    """--check, on CPU in fp32. Returns the lines to print; raises AssertionError where the reference and ours
    disagree."""
    device = torch.device("cpu")
    ours = CycleGAN(cfg, device)
    ref = reference_for(cfg, device)
    lines = [f"reference generator {ref.G_A.notation}; discriminator {ref.D_A.notation}"]
    layer_for_layer = True
    for mine, theirs in NET_PAIRS:
        a, b = list(ours.nets[mine].parameters()), list(getattr(ref, theirs).parameters())
        count_a, count_b = sum(p.numel() for p in a), sum(p.numel() for p in b)
        same_shapes = [p.shape for p in a] == [p.shape for p in b]
        layer_for_layer &= same_shapes
        lines.append(
            f"{mine} (ours) {count_a:,} parameters, {theirs} (reference) {count_b:,}; "
            f"{len(a)} vs {len(b)} tensors, {'same' if same_shapes else 'different'} shapes in order"
        )
        assert count_a == count_b, f"{mine}/{theirs}: {count_a} != {count_b} parameters"
    if not layer_for_layer:
        lines.append("not layer for layer: parameter counts only")
        return lines
    copy_weights(ours, ref)
    x = batches[0][0]
    with torch.no_grad():
        for mine, theirs in NET_PAIRS:
            y_ours, y_ref = ours.nets[mine](x), getattr(ref, theirs)(x)
            diff = (y_ours - y_ref).abs().max().item()
            lines.append(
                f"forward {mine} vs {theirs}, same weights, output {tuple(y_ours.shape)}: max |diff| {diff:.2e}"
            )
            assert diff <= 1e-5, f"{mine}/{theirs} forward differs by {diff}"
    # Training from the same weights on the same batches, with the config's identity weight and, where that is 0,
    # the paper's 0.5 too, so that the identity term is compared as well.
    for weight in sorted({cfg.lambda_identity, cfg.lambda_identity or 0.5}):
        lines += _check_steps(dataclasses.replace(cfg, lambda_identity=weight), batches)
    return lines


def _check_steps(cfg, batches):
    """Train ours and the reference from the same weights on `batches`; the pools are still filling (they return
    the new fakes as they are), so both compute the same losses and updates up to float rounding."""
    assert len(batches) * cfg.batch <= cfg.pool_size, "the step check needs the pools still filling"
    device = torch.device("cpu")
    ours, ref = CycleGAN(cfg, device), reference_for(cfg, device)
    copy_weights(ours, ref)
    lines = [f"training steps with lambda_identity {cfg.lambda_identity}, losses ours / reference:"]
    for i, (real_A, real_B) in enumerate(batches):
        mine, theirs = ours.step(real_A, real_B), ref.step(real_A, real_B)
        pairs = {
            "G": (mine["G"], theirs["G"]),
            "D judging A": (mine["D_A"], theirs["D_B"]),
            "D judging B": (mine["D_B"], theirs["D_A"]),
        }
        lines.append(
            f"  step {i + 1}: " + ", ".join(f"{k} {float(a):.6f} / {float(b):.6f}" for k, (a, b) in pairs.items())
        )
        for k, (a, b) in pairs.items():
            assert abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(float(b))), f"step {i + 1} {k}: {a} vs {b}"
    with torch.no_grad():
        diff = (ours.nets["G_AB"](batches[0][0]) - ref.G_A(batches[0][0])).abs().max().item()
    lines.append(f"  after {len(batches)} steps, G_AB vs G_A output max |diff| {diff:.2e}")
    assert diff <= 1e-3, f"after training the generators differ by {diff}"
    return lines


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roi", default="mouth")
    ap.add_argument("--manifest", default="", help="a data/rois/<roi>.parquet; default: synthetic crops")
    ap.add_argument("--n-synthetic", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="default: train.batch")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="torch.compile our path")
    ap.add_argument("--precision", default="", choices=["", "bf16", "fp32"], help="default: train.precision")
    ap.add_argument("--workers", type=int, default=0, help="reference DataLoader workers")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument(
        "--check",
        action="store_true",
        help="check that the reference matches our resnet path (parameters, forward, 3 steps), then exit",
    )
    return ap.parse_args()


def bench_config(args):
    """params.yaml's train config for the ROI with the command line's overrides, made like for like."""
    params = P.load()
    params["train"]["device"] = args.device
    if args.batch:
        params["train"]["batch"][args.roi] = args.batch
    if args.precision:
        params["train"]["precision"] = args.precision
    params["train"]["compile"] = args.compile
    return like_for_like_config(params, args.roi)


def race(args, cfg, pngs_a, pngs_b, crops_a, crops_b):
    """Alternating rounds of our step and the reference's; prints the medians and their ratio."""
    device = torch.device(cfg.device)
    ours = CycleGAN(cfg, device)
    data = DeviceData(crops_a, crops_b, cfg, device, ours.channels_last)
    data.plan_epoch(torch.Generator().manual_seed(0))
    ref = reference_for(cfg, device)
    dataset = UnalignedPngs(pngs_a, pngs_b, data.pad, cfg.flip)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )

    state = {"ours_step": 0, "ref_iter": iter(loader)}

    def ours_step():
        if state["ours_step"] == data.steps_per_epoch:
            data.plan_epoch(torch.Generator().manual_seed(state["ours_step"]))
            state["ours_step"] = 0
        ours.step(*data.batch(state["ours_step"]))
        state["ours_step"] += 1

    def ref_step():
        try:
            a, b = next(state["ref_iter"])
        except StopIteration:
            state["ref_iter"] = iter(loader)
            a, b = next(state["ref_iter"])
        ref.step(a.to(device), b.to(device))

    timed(ours_step, args.warmup, device, False), timed(ref_step, args.warmup, device, True)
    ours_t, ref_t = [], []
    for _ in range(args.rounds):
        ours_t += timed(ours_step, args.steps, device, False)
        ref_t += timed(ref_step, args.steps, device, True)
    report(ours, cfg, device, ours_t, ref_t)


def timed(step, n, device, autotune: bool) -> list:
    """(wall, CPU) seconds of `n` calls of `step`. On a machine shared with other jobs the CPU time is what the step
    costs; the wall time includes waiting for a core. The published code turns on cuDNN's autotuner and our stage does
    not, so each side runs with its own setting."""
    torch.backends.cudnn.benchmark = autotune
    times = []
    for _ in range(n):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        step()
        sync(device)
        times.append((time.perf_counter() - t, time.process_time() - c))
    return times


def report(ours, cfg, device, ours_t, ref_t):
    median = lambda ts, k: 1000 * statistics.median(t[k] for t in ts)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(
        f"device={name} ours: precision={'bf16' if ours.autocast['enabled'] else 'fp32'} "
        f"channels_last={ours.channels_last} compile={cfg.compile}; reference: fp32, NCHW, plain Adam"
    )
    print(f"{'':10} {'wall ms/step':>13} {'cpu ms/step':>12}   (medians of {len(ours_t)} steps)")
    for label, ts in (("ours", ours_t), ("reference", ref_t)):
        print(f"{label:10} {median(ts, 0):13.1f} {median(ts, 1):12.1f}")
    print(
        f"ratio ours/reference: wall {median(ours_t, 0) / median(ref_t, 0):.3f}, "
        f"cpu {median(ours_t, 1) / median(ref_t, 1):.3f}"
    )


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = bench_config(args)
    (pngs_a, pngs_b), source = load_pngs(args.manifest, cfg.size, args.n_synthetic)
    decode = lambda pngs: np.stack([to_rgb(decode_png(p))[..., :3].transpose(2, 0, 1) for p in pngs])
    crops_a, crops_b = decode(pngs_a), decode(pngs_b)
    print(
        f"roi={cfg.roi} size={cfg.size} batch={cfg.batch} ngf={cfg.ngf} ndf={cfg.ndf} n_blocks={cfg.n_blocks} "
        f"n_layers={cfg.n_layers} n_down={cfg.n_down} lambda_cycle={cfg.lambda_cycle} "
        f"lambda_identity={cfg.lambda_identity} pool={cfg.pool_size} data={source}; "
        f"ours: generator={cfg.generator} upsample={cfg.upsample} lambda_expression={cfg.lambda_expression}"
    )

    if args.check:
        cpu_cfg = dataclasses.replace(cfg, device="cpu", precision="fp32", compile=False)
        data = DeviceData(crops_a, crops_b, cpu_cfg, torch.device("cpu"))
        data.plan_epoch(torch.Generator().manual_seed(0))
        print("\n".join(check_reference(cpu_cfg, [data.batch(i) for i in range(3)])))
        print("check passed")
        return
    race(args, cfg, pngs_a, pngs_b, crops_a, crops_b)


if __name__ == "__main__":
    main()
