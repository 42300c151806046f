"""Step time of our CycleGAN training path against a reference-style step, side by side on one machine.

Ours: both domains resident on the device as uint8, batches gathered and augmented there (`DeviceData`), bf16
autocast + channels_last + fused Adam on CUDA (and torch.compile with --compile).
Reference-style: what the public implementation does per step: a torch DataLoader whose dataset decodes each
sample's PNG and flips/shifts it on the CPU, batches copied to the device, fp32, NCHW, plain Adam. The model maths
(`CycleGAN.step`) is the same in both, so the ratio measures the training path, not a different model.

Run from the project root:
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

from stages.lib import params as P  # noqa: E402
from stages.lib.codec import decode_png, to_rgb  # noqa: E402
from stages.lib.cyclegan import CycleGAN, DeviceData, read_config  # noqa: E402
from stages.lib.expression import fit_expression  # noqa: E402
from stages.lib.tables import read_frame  # noqa: E402


class PngPairs(torch.utils.data.Dataset):
    """Reference-style data: decode one PNG per sample, augment it with numpy, return float CHW in [-1, 1]."""

    def __init__(self, pngs_a, pngs_b, pad, flip, seed=0):
        self.a, self.b, self.pad, self.flip = pngs_a, pngs_b, pad, flip
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return max(len(self.a), len(self.b))

    def _load(self, data):
        img = to_rgb(decode_png(data))[..., :3].astype(np.float32)
        if self.pad:
            size = img.shape[0]
            padded = np.pad(img, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)), mode="reflect")
            y, x = self.rng.integers(0, 2 * self.pad + 1, 2)
            img = padded[y:y + size, x:x + size]
        if self.flip and self.rng.random() < 0.5:
            img = img[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) / 127.5 - 1.0

    def __getitem__(self, i):
        # Unpaired: A in order, B at random, as the reference's unaligned dataset does.
        return self._load(self.a[i % len(self.a)]), self._load(self.b[self.rng.integers(len(self.b))])


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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = P.load()
    params["train"]["device"] = args.device
    if args.batch:
        params["train"]["batch"][args.roi] = args.batch
    if args.precision:
        params["train"]["precision"] = args.precision
    params["train"]["compile"] = args.compile
    cfg = read_config(params, args.roi)
    device = torch.device(cfg.device)
    (pngs_a, pngs_b), source = load_pngs(args.manifest, cfg.size, args.n_synthetic)
    decode = lambda pngs: np.stack([to_rgb(decode_png(p))[..., :3].transpose(2, 0, 1) for p in pngs])

    crops_a, crops_b = decode(pngs_a), decode(pngs_b)
    # Both paths score their outputs with the same frozen expression classifier when the config weighs it.
    expression = fit_expression(crops_a, crops_b, device, cfg.seed)[0] if cfg.lambda_expression > 0 else None
    ours = CycleGAN(cfg, device, fast=True, expression=expression)
    data = DeviceData(crops_a, crops_b, cfg, device, ours.channels_last)
    data.plan_epoch(torch.Generator().manual_seed(0))
    ref_cfg = dataclasses.replace(cfg, precision="fp32", compile=False)
    ref = CycleGAN(ref_cfg, device, fast=False, expression=expression)
    dataset = PngPairs(pngs_a, pngs_b, data.pad, cfg.flip)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)

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

    def timed(step, n):
        # Wall time, and on CPU also this process's CPU time: on a machine shared with other jobs the CPU time is
        # what the step costs, the wall time includes waiting for a core.
        times = []
        for _ in range(n):
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            step()
            sync(device)
            times.append((time.perf_counter() - t, time.process_time() - c))
        return times

    timed(ours_step, args.warmup), timed(ref_step, args.warmup)
    ours_t, ref_t = [], []
    for _ in range(args.rounds):
        ours_t += timed(ours_step, args.steps)
        ref_t += timed(ref_step, args.steps)
    median = lambda ts, k: 1000 * statistics.median(t[k] for t in ts)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"roi={cfg.roi} size={cfg.size} batch={cfg.batch} ngf={cfg.ngf} ndf={cfg.ndf} n_blocks={cfg.n_blocks} "
          f"n_layers={cfg.n_layers} data={source} device={name} "
          f"precision={'bf16' if ours.autocast['enabled'] else 'fp32'} compile={cfg.compile}")
    print(f"{'':10} {'wall ms/step':>13} {'cpu ms/step':>12}   (medians of {len(ours_t)} steps)")
    for label, ts in (("ours", ours_t), ("reference", ref_t)):
        print(f"{label:10} {median(ts, 0):13.1f} {median(ts, 1):12.1f}")
    print(f"ratio ours/reference: wall {median(ours_t, 0) / median(ref_t, 0):.3f}, "
          f"cpu {median(ours_t, 1) / median(ref_t, 1):.3f}")

if __name__ == "__main__":
    main()
