"""CycleGAN for one ROI: params, device-resident data, the training step and the LR schedule (the loop, checkpoints
and outputs: stages/lib/training.py).

Domain A is the source emotion (e.g. neutral), B the target (e.g. happy). Naming: G_AB maps A -> B, G_BA maps
B -> A; D_A tells real A images from G_BA's fakes, D_B tells real B from G_AB's fakes (the reference code calls
these netD_B and netD_A; we name a discriminator after the domain it judges).

The hot loop does no per-sample Python work: all train crops of both domains sit on the device as uint8; each
epoch draws its sample order, flips and jitter offsets in one go on a CPU generator (so that CPU and GPU see the
same stream and it can be checkpointed); a step gathers, augments and normalises a whole batch with index ops.
Losses are summed on the device and read back once per epoch.

Run through the stage: `python -m stages.train <roi>`.
"""

import copy
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import params as P
from .distributed import World
from .errors import StageError
from .expression import expression_loss
from .networks import GENERATOR_KINDS, UPSAMPLINGS, FakePool, PatchDiscriminator, ResnetGenerator, init_weights
from .optim import Adam

# Bump when the checkpoint layout or the training maths changes, so that old checkpoints are not resumed. 3: the
# optimisers' state on CPU is optim.Adam's.
CHECKPOINT_FORMAT = 3
# Sample pairs shown in each epoch's grid.
GRID_SAMPLES = 4
# mask_area: the attention mask's mean over A->B outputs (0 for the other generators), to see a collapse coming.
LOSS_NAMES = ("G", "G_adv", "D_A", "D_B", "cycle", "identity", "expression", "mask_area")


@dataclass(frozen=True)
class TrainConfig:
    roi: str
    size: int
    generator: str
    upsample: str
    epochs: int
    epochs_decay: int
    batch: int
    lr: float
    beta1: float
    lambda_cycle: float
    lambda_identity: float
    lambda_expression: float
    ema: float
    lambda_mask: float
    mask_budget: float
    mask_warmup: float
    pool_size: int
    ngf: int
    ndf: int
    n_blocks: int
    n_layers: int
    n_down: int
    flip: bool
    jitter: float
    precision: str
    compile: bool
    device: str
    seed: int


# Keys of params.yaml this stage reads for `roi`; dvc.yaml lists exactly these (a test checks it).
SCALAR_KEYS = (
    "generator",
    "upsample",
    "lr",
    "beta1",
    "lambda_mask",
    "mask_budget",
    "mask_warmup",
    "pool_size",
    "ngf",
    "ndf",
    "flip",
    "jitter",
    "precision",
    "compile",
    "device",
    "seed",
)
# Per ROI because a 128-pixel face costs four times a 64-pixel mouth per image, and each ROI's recipe was measured.
PER_ROI_KEYS = (
    "epochs",
    "epochs_decay",
    "batch",
    "n_blocks",
    "n_layers",
    "n_down",
    "lambda_cycle",
    "lambda_identity",
    "lambda_expression",
    "ema",
)


def param_keys(roi):
    return [f"train.{k}" for k in SCALAR_KEYS] + [f"train.{k}.{roi}" for k in PER_ROI_KEYS] + [f"rois.side.{roi}"]


def read_config(params: dict, roi: str) -> TrainConfig:
    """Validate the `train:` params for `roi`; a bad value raises StageError naming the key."""
    names = P.get(params, "rois.names")
    if roi not in names:
        raise StageError(f"train: unknown roi {roi!r}; rois.names has {', '.join(names)}")
    n = lambda key, kind=float, lo=None, hi=None: P.number(params, key, kind, lo, hi)
    size, n_down = P.roi_side(params, roi, lo=16)
    epochs = n(f"train.epochs.{roi}", int, 1)
    cfg = TrainConfig(
        roi=roi,
        size=size,
        generator=P.choice(params, "train.generator", GENERATOR_KINDS),
        upsample=P.choice(params, "train.upsample", UPSAMPLINGS),
        epochs=epochs,
        epochs_decay=n(f"train.epochs_decay.{roi}", int, 0, epochs),
        batch=n(f"train.batch.{roi}", int, 1),
        lr=P.number(params, "train.lr", float, hi=1.0, above=0.0),
        beta1=n("train.beta1", float, 0.0, 0.999),
        lambda_cycle=n(f"train.lambda_cycle.{roi}", float, 0.0),
        lambda_identity=n(f"train.lambda_identity.{roi}", float, 0.0),
        lambda_expression=n(f"train.lambda_expression.{roi}", float, 0.0),
        ema=n(f"train.ema.{roi}", float, 0.0, 0.9999),
        lambda_mask=n("train.lambda_mask", float, 0.0),
        mask_budget=n("train.mask_budget", float, 0.0, 1.0),
        mask_warmup=n("train.mask_warmup", float, 0.0, 1.0),
        pool_size=n("train.pool_size", int, 0),
        ngf=n("train.ngf", int, 1),
        ndf=n("train.ndf", int, 1),
        n_blocks=n(f"train.n_blocks.{roi}", int, 0),
        n_layers=n(f"train.n_layers.{roi}", int, 1, 6),
        n_down=n_down,
        flip=P.flag(params, "train.flip"),
        jitter=n("train.jitter", float, 0.0, 0.5),
        precision=P.choice(params, "train.precision", ["bf16", "fp32"]),
        compile=P.flag(params, "train.compile"),
        device=P.device(params, "train.device").type,
        seed=n("train.seed", int, 0),
    )
    P.check_unknown(params, ["train"], roi_names=names)
    # The discriminator halves the image n_layers times and then needs two more 4x4 valid-ish convolutions.
    if size // 2**cfg.n_layers < 4:
        raise StageError(f"params: train.n_layers.{roi}={cfg.n_layers} is too deep for a {size}-pixel ROI")
    return cfg


# ---------------------------------------------------------------------------------------------------- data


class DeviceData:
    """Both domains resident on the device as uint8; batches are gathered, augmented and scaled there."""

    def __init__(self, crops_a, crops_b, cfg: TrainConfig, device, channels_last=False, world=None):
        """`world`: under torchrun every rank plans the same epoch and takes its slice of every batch."""
        self.domains = [torch.from_numpy(c).to(device) for c in (crops_a, crops_b)]
        self.cfg, self.device, self.channels_last, self.world = cfg, device, channels_last, world or World()
        self.pad = int(round(cfg.jitter * cfg.size))
        self.steps_per_epoch = max(1, max(len(crops_a), len(crops_b)) // cfg.batch)
        self.plan = None

    def plan_epoch(self, generator: torch.Generator):
        """Draw this epoch's order, jitter offsets and flips for both domains, then move them to the device once.

        An epoch covers the larger domain once; the smaller one is reshuffled as often as needed.
        """
        cfg, n = self.cfg, self.steps_per_epoch * self.cfg.batch
        plan = []
        for images in self.domains:
            count = len(images)
            order = torch.cat([torch.randperm(count, generator=generator) for _ in range(math.ceil(n / count))])[:n]
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
            flips = (torch.rand(n, generator=generator) < 0.5) & torch.tensor(cfg.flip)  # drawn even when off
            plan.append(
                tuple(
                    t.view(self.steps_per_epoch, cfg.batch, *t.shape[1:]).to(self.device)
                    for t in (order, offsets, flips)
                )
            )
        self.plan = plan

    def batch(self, step: int):
        """(real_A, real_B) for `step` of the planned epoch, float in [-1, 1] (this rank's slice of them)."""
        return tuple(
            self._augment(images, *(self.world.local(t[step]) for t in plan))
            for images, plan in zip(self.domains, self.plan)
        )

    def _augment(self, images, order, offsets, flips):
        x = images[order].float()
        size, pad = self.cfg.size, self.pad
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        # One gather does the random crop (jitter) and the horizontal flip for every sample at once.
        ar = torch.arange(size, device=x.device)
        rows = offsets[:, 0, None] + ar
        cols = offsets[:, 1, None] + torch.where(flips[:, None], size - 1 - ar, ar)
        batch_idx = torch.arange(len(x), device=x.device)[:, None, None]
        x = x[batch_idx, :, rows[:, :, None], cols[:, None, :]]  # (B, S, S, C): advanced dims come first
        x = x.permute(0, 3, 1, 2)  # already channels_last in memory
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------------- model


def lr_factor(step: int, total_steps: int, decay_steps: int) -> float:
    """Constant, then linear decay that reaches zero at the end of the last step (per step, not per epoch)."""
    if decay_steps <= 0:
        return 1.0
    return min(1.0, (total_steps - step) / decay_steps)


def _lsgan(pred, real: bool):
    # Least-squares GAN loss, computed in fp32 whatever precision produced `pred`.
    pred = pred.float()
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


class CycleGAN:
    """Two generators, two discriminators, their optimisers and fake pools, and one training step."""

    def __init__(self, cfg: TrainConfig, device: torch.device, expression=None, world=None):
        """`expression`: the frozen ExpressionNet that lambda_expression weighs (stages/lib/expression.py); `world`:
        the ranks of a torchrun run (stages/lib/distributed.py), one process by default."""
        self.cfg, self.device, self.world = cfg, device, world or World()
        self.on_cuda = device.type == "cuda"
        # channels_last suits cuDNN convolutions; on CPU it was slower in our measurements, so it stays NCHW there.
        self.channels_last = self.on_cuda
        self.autocast = dict(
            device_type=device.type, dtype=torch.bfloat16, enabled=self.on_cuda and cfg.precision == "bf16"
        )
        init_gen = torch.Generator().manual_seed(cfg.seed)
        nets = {
            name: ResnetGenerator(cfg.ngf, cfg.n_blocks, n_down=cfg.n_down, kind=cfg.generator, upsample=cfg.upsample)
            for name in ("G_AB", "G_BA")
        } | {
            "D_A": PatchDiscriminator(cfg.ndf, cfg.n_layers),
            "D_B": PatchDiscriminator(cfg.ndf, cfg.n_layers),
        }
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.nets = {k: init_weights(v, 0.02, init_gen).to(device, memory_format=fmt) for k, v in nets.items()}
        # Forward passes go through `run` (compiled or not); state dicts come from the plain modules.
        self.run = {k: torch.compile(v) if cfg.compile else v for k, v in self.nets.items()}
        # The forwards whose gradients train a net go through `synced`, which averages them across ranks; the frozen
        # discriminators of the generator update and the sample grid go through `run`, which syncs nothing.
        self.synced = self.run
        if self.world.distributed:
            wrapped = {k: self.world.wrap(v, device) for k, v in self.nets.items()}
            self.synced = {k: torch.compile(v) if cfg.compile else v for k, v in wrapped.items()}
        self.opt_G = self._adam(itertools.chain(self.nets["G_AB"].parameters(), self.nets["G_BA"].parameters()))
        self.opt_D = self._adam(itertools.chain(self.nets["D_A"].parameters(), self.nets["D_B"].parameters()))
        self.pool_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.pool_A, self.pool_B = FakePool(cfg.pool_size, self.pool_gen), FakePool(cfg.pool_size, self.pool_gen)
        if cfg.lambda_expression > 0 and expression is None:
            raise StageError("train: lambda_expression > 0 needs the expression classifier")
        self.expression = expression
        # The weights the stage writes when train.ema > 0: an exponential moving average of G_AB's (Yazici et al.
        # 2019: averaging a GAN generator's iterates gives better and steadier results than its last iterate).
        self.ema = copy.deepcopy(self.nets["G_AB"]).requires_grad_(False) if cfg.ema > 0 else None
        self.ema_updates = 0

    def _adam(self, params):
        betas = (self.cfg.beta1, 0.999)
        if self.on_cuda:
            return torch.optim.Adam(params, lr=self.cfg.lr, betas=betas, fused=True)
        # torch.optim.Adam's CPU update, bit for bit, without the torch._dynamo import (1.3 s) that building any
        # torch.optim optimiser brings (stages/lib/optim.py)
        return Adam(params, lr=self.cfg.lr, betas=betas)

    def set_lr(self, lr):
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def _discriminators_trainable(self, flag):
        # D is frozen during the generator update so that G's backward pass does not compute gradients for it.
        for name in ("D_A", "D_B"):
            for p in self.nets[name].parameters():
                p.requires_grad_(flag)

    def _edit(self, name, x):
        # The generator's output and its attention mask (None unless train.generator is attention).
        if self.cfg.generator == "attention":
            if self.world.distributed:  # through DDP's forward, which is what averages the gradients
                return self.synced[name](x, with_mask=True)
            return self.nets[name].edit(x)
        return self.synced[name](x), None

    def _mask_penalty(self, masks, progress):
        """Attention only. The guard against mask collapse: no penalty during the first `mask_warmup` of training
        (the edit must be learned before its area is questioned), then an L1 only on the mean area above
        `mask_budget`, so that nothing ever pushes a mask that is already small towards 0."""
        if not masks or progress < self.cfg.mask_warmup:
            return torch.zeros((), device=self.device)
        return sum(F.relu(m.float().mean() - self.cfg.mask_budget) for m in masks)

    def step(self, real_A, real_B, progress: float = 0.0) -> dict:
        """One generator update, then one discriminator update; returns detached loss tensors (no sync).
        `progress` is the fraction of training done (the attention mask's warm-up reads it)."""
        cfg, run, sync, world = self.cfg, self.run, self.synced, self.world
        with torch.autocast(**self.autocast):
            fake_B, mask_B = self._edit("G_AB", real_A)
            rec_A = sync["G_BA"](fake_B)
            fake_A, mask_A = self._edit("G_BA", real_B)
            rec_B = sync["G_AB"](fake_A)

            self._discriminators_trainable(False)
            adv = _lsgan(run["D_B"](fake_B), True) + _lsgan(run["D_A"](fake_A), True)
            cycle = F.l1_loss(rec_A.float(), real_A) + F.l1_loss(rec_B.float(), real_B)
            loss_G = adv + cfg.lambda_cycle * cycle
            zero = torch.zeros((), device=self.device)
            identity = expression = zero
            if cfg.lambda_identity > 0:
                # An image already in the target domain should pass through unchanged (keeps colours).
                identity = F.l1_loss(sync["G_AB"](real_B).float(), real_B) + F.l1_loss(
                    sync["G_BA"](real_A).float(), real_A
                )
                loss_G = loss_G + cfg.lambda_cycle * cfg.lambda_identity * identity
            if cfg.lambda_expression > 0:
                # StarGAN's domain-classification loss: A->B output must read as B, B->A output as A.
                expression = expression_loss(self.expression, fake_B, True) + expression_loss(
                    self.expression, fake_A, False
                )
                loss_G = loss_G + cfg.lambda_expression * expression
            mask = self._mask_penalty([m for m in (mask_B, mask_A) if m is not None], progress)
            loss_G = loss_G + cfg.lambda_mask * mask
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        if self.ema is not None:
            self._update_ema()

        self._discriminators_trainable(True)
        # The pool answers for the whole global batch, so that it stays the same on every rank.
        pooled_A = world.local(self.pool_A.query(world.gather(fake_A)))
        pooled_B = world.local(self.pool_B.query(world.gather(fake_B)))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.autocast(**self.autocast):
            loss_D_A = 0.5 * (
                _lsgan(sync["D_A"](real_A), True) + _lsgan(sync["D_A"](pooled_A.contiguous(memory_format=fmt)), False)
            )
            loss_D_B = 0.5 * (
                _lsgan(sync["D_B"](real_B), True) + _lsgan(sync["D_B"](pooled_B.contiguous(memory_format=fmt)), False)
            )
        self.opt_D.zero_grad(set_to_none=True)
        (loss_D_A + loss_D_B).backward()
        self.opt_D.step()
        # Logged cycle/identity are the mean L1 per direction, unweighted, so they read in [-1, 1] pixel units.
        return {
            "G": loss_G.detach(),
            "G_adv": adv.detach(),
            "D_A": loss_D_A.detach(),
            "D_B": loss_D_B.detach(),
            "cycle": cycle.detach() / 2,
            "identity": identity.detach() / 2,
            "expression": expression.detach() / 2,
            "mask_area": (mask_B.detach().float().mean() if mask_B is not None else zero),
        }

    @torch.no_grad()
    def _update_ema(self):
        self.ema_updates += 1
        # Warm-up as in TensorFlow's ExponentialMovingAverage(num_updates): the first averages follow the weights
        # closely instead of staying near the random initialisation.
        decay = min(self.cfg.ema, (1 + self.ema_updates) / (10 + self.ema_updates))
        live = self.nets["G_AB"]
        torch._foreach_lerp_(list(self.ema.parameters()), list(live.parameters()), 1.0 - decay)
        for average, current in zip(self.ema.buffers(), live.buffers()):
            average.copy_(current)

    def generator_AB(self):
        """The A->B generator the stage writes: the moving average when train.ema > 0, else the trained weights."""
        return self.nets["G_AB"] if self.ema is None else self.ema

    @torch.no_grad()
    def sample_grid(self, real_A, real_B) -> np.ndarray:
        """Rows of [A, A->B, A->B->A | B, B->A, B->A->B] as one uint8 RGB image."""
        with torch.autocast(**self.autocast):
            fake_B = self.run["G_AB"](real_A)
            rec_A = self.run["G_BA"](fake_B)
            fake_A = self.run["G_BA"](real_B)
            rec_B = self.run["G_AB"](fake_A)
        gap = torch.ones_like(real_A[:, :, :, :4])
        row = torch.cat([real_A, fake_B.float(), rec_A.float(), gap, real_B, fake_A.float(), rec_B.float()], dim=3)
        grid = torch.cat(list(row), dim=1)  # stack the samples vertically: (3, n*S, W)
        grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return grid.permute(1, 2, 0).cpu().numpy()

    def state_dict(self):
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "pool_A": self.pool_A.state_dict(),
            "pool_B": self.pool_B.state_dict(),
            "pool_rng": self.pool_gen.get_state(),
        } | ({} if self.ema is None else {"ema_G_AB": self.ema.state_dict(), "ema_updates": self.ema_updates})

    def load_state_dict(self, state):
        for k, v in self.nets.items():
            v.load_state_dict(state["nets"][k])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
        self.pool_gen.set_state(state["pool_rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema_G_AB"])
            self.ema_updates = int(state["ema_updates"])
