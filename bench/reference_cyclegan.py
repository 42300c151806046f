"""An independent reference-style CycleGAN training step, written from the published algorithm, for bench/train.py.

Sources (facts, not code): Zhu, Park, Isola, Efros 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", section 4 and appendix 7.2, and the documented behaviour of the authors'
junyanz/pytorch-CycleGAN-and-pix2pix (`cycle_gan_model.py`, `networks.py`, `image_pool.py`, `unaligned_dataset.py`).
Nothing here imports stages.lib.cyclegan or stages.lib.networks: the nets are built from the paper's own layer
notation, so that bench/train.py times our step against a second implementation, not against our code renamed.

What it implements:
- Generator, the appendix's notation: c7s1-ngf, d(2ngf) ... (n_down of them), R x n_blocks, u ... , c7s1-3.
  c7s1-k: reflection pad 3, 7x7 conv, stride 1; dk: 3x3 conv, stride 2, zero pad 1; Rk: two reflection-padded 3x3
  convs with a skip; uk: 3x3 transposed conv, stride 1/2. Each is followed by instance norm (no affine, no running
  stats) and ReLU, except the last c7s1-3, which ends in tanh. Convolutions have biases (the code's use_bias is true
  with instance norm).
- Discriminator (PatchGAN): C(ndf) without norm, then C(2ndf) ... doubling up to 8*ndf, n_layers stride-2 4x4
  convolutions in all, one more 4x4 stride-1 C, then a 4x4 convolution to one channel; LeakyReLU 0.2, padding 1.
  n_layers 3 is the paper's 70x70 PatchGAN.
- Weights N(0, 0.02), biases 0. LSGAN: MSE to 1 for real, 0 for fake.
- One step (the code's optimize_parameters): G_A(A)=fake_B, G_B(fake_B)=rec_A, G_B(B)=fake_A, G_A(fake_A)=rec_B;
  with both D frozen, loss_G = MSE(D_A(fake_B), 1) + MSE(D_B(fake_A), 1) + lambda_A |rec_A - A|_1
  + lambda_B |rec_B - B|_1 + lambda_identity (lambda_B |G_A(B) - B|_1 + lambda_A |G_B(A) - A|_1), one Adam step of
  both G; then each D on its real images and on fakes drawn from its own image pool, (real + fake) / 2, backward
  per D, one Adam step of both D. Adam betas (beta1, 0.999); the paper's lr is 2e-4, lambda 10, lambda_identity 0.5.
- The image pool (Shrivastava et al.): per image, while fewer than pool_size are stored, store and return it; then
  with probability 1/2 return a random stored image and store the new one in its place, else return the new one.
- The data (`UnalignedPngs`): one PNG decoded per sample in a torch Dataset, augmented with numpy on the host
  (random shift and horizontal flip), A in loader order and B drawn at random, as the unaligned dataset does.

Where it departs from the published defaults, to match our config layer for layer (bench/train.py reads the sizes
from params.yaml): ngf/ndf/n_blocks/n_layers are our values, and the number of downsamplings is ours too
(`n_down`; the published one is fixed at 2; our 32-pixel ROIs use 1). Our demo default generator (`residual`, an
identity-initialised head) and the expression-classifier loss have no counterpart here, so bench/train.py times
our `generator: resnet` path with lambda_expression 0 against it.
"""

import random
import re

import numpy as np
import torch
from torch import nn

from stages.lib.codec import decode_png, to_rgb

INIT_STD = 0.02


# ---------------------------------------------------------------------------------------------------- nets


def generator_notation(ngf, n_blocks, n_down, out_channels=3):
    """The appendix's description of the ResNet generator, e.g. c7s1-16,d32,R32,R32,u16,c7s1-3."""
    widths = [ngf * 2**i for i in range(n_down + 1)]
    return (
        [f"c7s1-{ngf}"]
        + [f"d{w}" for w in widths[1:]]
        + [f"R{widths[-1]}"] * n_blocks
        + [f"u{w}" for w in reversed(widths[:-1])]
        + [f"c7s1-{out_channels}"]
    )


def discriminator_notation(ndf, n_layers):
    """The PatchGAN as Ck tokens (stride 2) with the stride-1 one last, e.g. C16,C32,C64s1 for n_layers 2."""
    widths = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
    return [f"C{w}" for w in widths[:-1]] + [f"C{widths[-1]}s1"]


class _Residual(nn.Module):
    """Rk: x + (pad, 3x3, IN, ReLU, pad, 3x3, IN)(x)."""

    def __init__(self, k):
        super().__init__()
        halves = [[nn.ReflectionPad2d(1), nn.Conv2d(k, k, kernel_size=3), _instance_norm(k)] for _ in range(2)]
        self.branch = nn.Sequential(*halves[0], nn.ReLU(inplace=True), *halves[1])

    def forward(self, x):
        return self.branch(x) + x


def _instance_norm(k):
    return nn.InstanceNorm2d(k, affine=False, track_running_stats=False)


def _token(token):
    kind, k, tail = re.fullmatch(r"(c7s1-|d|R|u|C)(\d+)(s1)?", token).groups()
    return kind, int(k), tail


class ReferenceGenerator(nn.Sequential):
    """The generator from its notation; the last c7s1 token is the tanh output layer."""

    def __init__(self, ngf, n_blocks, n_down, channels=3):
        tokens = generator_notation(ngf, n_blocks, n_down, channels)
        modules, width = [], channels
        for position, token in enumerate(tokens):
            kind, k, _ = _token(token)
            if kind == "R":
                modules.append(_Residual(k))
                continue
            conv = {
                "c7s1-": lambda: [nn.ReflectionPad2d(3), nn.Conv2d(width, k, kernel_size=7)],
                "d": lambda: [nn.Conv2d(width, k, kernel_size=3, stride=2, padding=1)],
                "u": lambda: [nn.ConvTranspose2d(width, k, kernel_size=3, stride=2, padding=1, output_padding=1)],
            }[kind]()
            final = position == len(tokens) - 1
            modules += conv + ([nn.Tanh()] if final else [_instance_norm(k), nn.ReLU(inplace=True)])
            width = k
        super().__init__(*modules)
        self.notation = ",".join(tokens)


class ReferenceDiscriminator(nn.Sequential):
    """The PatchGAN from its notation: 4x4 convolutions with padding 1, no norm on the first, LeakyReLU 0.2."""

    def __init__(self, ndf, n_layers, channels=3):
        tokens = discriminator_notation(ndf, n_layers)
        modules, width = [], channels
        for position, token in enumerate(tokens):
            _, k, stride_one = _token(token)
            modules.append(nn.Conv2d(width, k, kernel_size=4, stride=1 if stride_one else 2, padding=1))
            if position:
                modules.append(_instance_norm(k))
            modules.append(nn.LeakyReLU(0.2, inplace=True))
            width = k
        modules.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        super().__init__(*modules)
        self.notation = ",".join(tokens)


def normal_init(net, generator):
    """N(0, 0.02) for every convolution's weight, zero biases."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, INIT_STD, generator=generator)
            nn.init.zeros_(module.bias)
    return net


# ---------------------------------------------------------------------------------------------------- training


class ImagePool:
    """History of generated images, one Python decision per image (the published pool's behaviour)."""

    def __init__(self, pool_size, seed):
        self.pool_size, self.stored, self.rng = pool_size, [], random.Random(seed)

    def query(self, images):
        if self.pool_size == 0:
            return images.detach()
        served = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.stored) < self.pool_size:
                self.stored.append(image)
                served.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                slot = self.rng.randint(0, self.pool_size - 1)
                served.append(self.stored[slot].clone())
                self.stored[slot] = image
            else:
                served.append(image)
        return torch.cat(served)


class ReferenceCycleGAN:
    """G_A: A -> B, G_B: B -> A; D_A judges domain B, D_B judges domain A (the published naming)."""

    def __init__(
        self,
        *,
        ngf,
        ndf,
        n_blocks,
        n_layers,
        n_down,
        lr,
        beta1,
        lambda_A,
        lambda_B,
        lambda_identity,
        pool_size,
        device,
        seed=0,
    ):
        init = torch.Generator().manual_seed(seed)
        self.G_A, self.G_B = (normal_init(ReferenceGenerator(ngf, n_blocks, n_down), init).to(device) for _ in range(2))
        self.D_A, self.D_B = (normal_init(ReferenceDiscriminator(ndf, n_layers), init).to(device) for _ in range(2))
        self.lambda_A, self.lambda_B, self.lambda_identity = lambda_A, lambda_B, lambda_identity
        self.pool_fake_A, self.pool_fake_B = ImagePool(pool_size, seed + 1), ImagePool(pool_size, seed + 2)
        self.opt_G = torch.optim.Adam([*self.G_A.parameters(), *self.G_B.parameters()], lr=lr, betas=(beta1, 0.999))
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], lr=lr, betas=(beta1, 0.999))
        self.l1, self.mse = nn.L1Loss(), nn.MSELoss()
        # The LSGAN targets, made once on the device and broadcast to each prediction's shape.
        self.targets = {True: torch.tensor(1.0, device=device), False: torch.tensor(0.0, device=device)}

    def gan_loss(self, prediction, is_real):
        return self.mse(prediction, self.targets[is_real].expand_as(prediction))

    def _freeze_discriminators(self, frozen):
        for p in (*self.D_A.parameters(), *self.D_B.parameters()):
            p.requires_grad = not frozen

    def _backward_D(self, net, real, fake):
        loss = (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False)) * 0.5
        loss.backward()
        return loss.detach()

    def step(self, real_A, real_B):
        """One generator update, then one discriminator update; returns the losses as detached tensors."""
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)

        self._freeze_discriminators(True)
        self.opt_G.zero_grad()
        losses = {
            "G_A": self.gan_loss(self.D_A(fake_B), True),
            "G_B": self.gan_loss(self.D_B(fake_A), True),
            "cycle_A": self.l1(rec_A, real_A) * self.lambda_A,
            "cycle_B": self.l1(rec_B, real_B) * self.lambda_B,
        }
        if self.lambda_identity > 0:
            losses["idt_A"] = self.l1(self.G_A(real_B), real_B) * self.lambda_B * self.lambda_identity
            losses["idt_B"] = self.l1(self.G_B(real_A), real_A) * self.lambda_A * self.lambda_identity
        loss_G = sum(losses.values())
        loss_G.backward()
        self.opt_G.step()

        self._freeze_discriminators(False)
        self.opt_D.zero_grad()
        out = {name: value.detach() for name, value in losses.items()}
        out["G"] = loss_G.detach()
        out["D_A"] = self._backward_D(self.D_A, real_B, self.pool_fake_B.query(fake_B))
        out["D_B"] = self._backward_D(self.D_B, real_A, self.pool_fake_A.query(fake_A))
        self.opt_D.step()
        return out


# ---------------------------------------------------------------------------------------------------- data


class UnalignedPngs(torch.utils.data.Dataset):
    """Reference-style data: decode one PNG per sample, shift it (reflect-padded random crop) and flip it with
    numpy, return float CHW in [-1, 1]; A by index, B at random (unpaired)."""

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
            img = padded[y : y + size, x : x + size]
        if self.flip and self.rng.random() < 0.5:
            img = img[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) / 127.5 - 1.0

    def __getitem__(self, i):
        return self._load(self.a[i % len(self.a)]), self._load(self.b[self.rng.integers(len(self.b))])
