"""The expression signal of training: a small classifier of one ROI's own crops, source (A) vs target (B).

StarGAN (Choi et al. 2018) trains its generator with a domain-classification loss: the output must be classified
as the target domain. CycleGAN's discriminator only asks "is this a plausible B crop?", which an unchanged neutral
mouth can answer well enough; this classifier asks "is it a *smiling* one?". `train.lambda_expression` weighs it.

It is trained before the GAN, on the kept *train* crops of the ROI manifest only (what `training.load_domains`
returns), never on test faces, and it is its own small net, sharing no weights with either evaluation judge (the
mini-Xception, the dlib embedding) or the curator. A seeded fifth of the train crops is held out to report its
accuracy (`expression_holdout_accuracy` in metrics/train_<roi>.json); the other four fifths fit it.

    from stages.lib.expression import fit_expression
    net, report = fit_expression(crops_a, crops_b, device="cpu", seed=0)   # uint8 (N, 3, S, S) train crops
    logits = net(images)            # (N,) logit of "target" for images in [-1, 1]
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .optim import Adam

HOLDOUT = 0.2
STEPS = 300
BATCH = 32
LR = 0.002


class ExpressionNet(nn.Module):
    """Three stride-2 4x4 convolutions (16, 32, 64 channels, leaky ReLU, instance norm after the first), global
    average pooling and a linear logit: ~45k weights, a few seconds of CPU for a 32-pixel ROI."""

    def __init__(self, width=16):
        super().__init__()
        layers, channels = [], 3
        for i, out in enumerate((width, width * 2, width * 4)):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1)]
            layers += [nn.InstanceNorm2d(out)] if i else []
            layers += [nn.LeakyReLU(0.2, True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def _split(n: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    n_hold = int(round(n * HOLDOUT)) if n >= 5 else 0
    return order[n_hold:], order[:n_hold]


def _scaled(crops: np.ndarray, index, device) -> torch.Tensor:
    return torch.from_numpy(crops[index.numpy()]).to(device).float() / 127.5 - 1.0


def fit_expression(crops_a: np.ndarray, crops_b: np.ndarray, device, seed: int):
    """Fit the classifier on train crops of A (label 0) and B (label 1); return it frozen in eval mode and a report
    {expression_holdout_accuracy, expression_n_fit, expression_n_holdout}. Deterministic for a seed on CPU."""
    generator = torch.Generator().manual_seed(seed + 7)
    torch.manual_seed(seed + 7)
    net = ExpressionNet().to(device)
    fit, hold = zip(*(_split(len(c), generator) for c in (crops_a, crops_b)))
    data = [_scaled(c, idx, device) for c, idx in zip((crops_a, crops_b), fit)]
    # On CPU, torch.optim.Adam's update without its import of torch._dynamo (stages/lib/optim.py)
    adam = Adam if torch.device(device).type == "cpu" else torch.optim.Adam
    opt = adam(net.parameters(), lr=LR, betas=(0.5, 0.999))
    half = BATCH // 2
    y = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
    for _ in range(STEPS):
        # Balanced batches whatever the domains' sizes, with random horizontal flips (expressions are symmetric).
        picks = [torch.randint(0, len(d), (half,), generator=generator) for d in data]
        x = torch.cat([d[p.to(d.device)] for d, p in zip(data, picks)])
        flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    report = {
        "expression_n_fit": sum(len(i) for i in fit),
        "expression_n_holdout": sum(len(i) for i in hold),
        "expression_holdout_accuracy": None,
    }
    if all(len(i) for i in hold):
        with torch.no_grad():
            right = [
                ((net(_scaled(c, idx, device)) > 0) == bool(label)).float().mean().item()
                for label, (c, idx) in enumerate(zip((crops_a, crops_b), hold))
            ]
        report["expression_holdout_accuracy"] = round(float(np.mean(right)), 4)  # balanced: mean of the two
    return net, report


def expression_loss(net: ExpressionNet, images: torch.Tensor, target: bool) -> torch.Tensor:
    """Binary cross-entropy of the classifier's logit against `target` (True: domain B), in fp32."""
    logits = net(images.float())
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))
