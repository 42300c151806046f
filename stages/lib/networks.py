"""CycleGAN architectures: ResNet generators (three output heads), PatchGAN discriminator, N(0, 0.02) init, the pool.

Generator heads (`train.generator`), one trunk:
- `resnet`: the published one, c7s1-3 then tanh: the output is drawn afresh, so at step 0 it is noise.
- `residual`: output = clamp(input + delta) with the delta head's weights zero at init, so the net starts as the
  identity and training only has to learn the edit (on real mouths: judge gain +0.105 vs +0.056 for resnet, #11).
- `attention`: output = input + mask * delta (GANimation's attention, written so that it too starts as the
  identity): a sigmoid mask says where to edit. Its known failure, the mask collapsing to "keep the input", is
  guarded in training (stages/lib/cyclegan.py: the mask penalty starts after a warm-up and only above a budget).

These follow the published CycleGAN recipe (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", and its appendix): instance norm without affine parameters, reflection
padding, a 70x70-style PatchGAN, no dropout. Images are RGB scaled to [-1, 1]; the generator ends in tanh.

Use:
    from stages.lib.networks import ResnetGenerator, PatchDiscriminator, init_weights, FakePool, load_generator
    g = init_weights(ResnetGenerator(ngf=16, n_blocks=2, kind="residual"))   # g(x) == x before training
    g = load_generator("models/cyclegan/mouth/generator_AB.pt", "cpu")   # eval mode, config from the file
    fake_b = g(real_a)                                                    # (N, 3, S, S) in [-1, 1]
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from .errors import StageError


class InstanceNorm32(nn.InstanceNorm2d):
    """Instance norm computed in fp32 whatever the input dtype.

    Under bf16 autocast the mean/variance of a whole feature map is where bf16's 8-bit mantissa loses most, so the
    statistics are taken in fp32 and the result is cast back; in fp32 training this is the plain layer.
    """

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def _norm(channels):
    # Instance norm without learned affine or running stats, as in the recipe: each image is normalised by itself,
    # so the style of one image does not leak into another through batch statistics.
    return InstanceNorm32(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and a skip connection; keeps shape."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x):
        return x + self.body(x)


GENERATOR_KINDS = ("resnet", "residual", "attention", "warp")
# warp: the largest shift of its flow field, as a fraction of the crop's half-side (grid_sample's [-1, 1] units):
# 0.25 moves a pixel up to 8 px on a 64-pixel crop, room to widen a mouth by a smile's few pixels per corner.
WARP_MAX_SHIFT = 0.25
# transpose: the recipe's stride-2 transposed convolutions; resize: nearest-neighbour x2 then a 3x3 convolution, which
# cannot draw the checkerboard that uneven kernel overlap gives transposed ones (Odena et al. 2016, Distill).
UPSAMPLINGS = ("transpose", "resize")


class ZeroInitConv(nn.Conv2d):
    """A convolution whose weights and bias init_weights sets to zero: the head of an identity-initialised net."""


class ResnetGenerator(nn.Module):
    """c7s1-ngf, `n_down` stride-2 downsamplings, `n_blocks` residual blocks, as many upsamplings, then the head of
    `kind`: c7s1-3 + tanh (resnet), a zero-initialised c7s1-3 delta (residual), delta plus a mask (attention), or
    delta plus a flow field (warp).

    warp moves the input's pixels before adding the delta: a zero-initialised 3x3 head on the bottleneck gives a
    coarse (S / 2**n_down) flow, upsampled bilinearly so that it is smooth by construction. A smile is partly a change
    of shape (wider mouth, lifted corners), which a flow draws directly and a delta only by repainting (#11).

    The recipe has n_down=2; a small ROI (32 px) can take one, so that its bottleneck stays 16x16 rather than 8x8.
    The input side must be divisible by 2 ** n_down.
    """

    def __init__(
        self, ngf=64, n_blocks=9, in_channels=3, out_channels=3, n_down=2, kind="resnet", upsample="transpose"
    ):
        super().__init__()
        if kind not in GENERATOR_KINDS:
            raise StageError(f"unknown generator {kind!r}; known: {', '.join(GENERATOR_KINDS)}")
        if upsample not in UPSAMPLINGS:
            raise StageError(f"unknown upsampling {upsample!r}; known: {', '.join(UPSAMPLINGS)}")
        if kind != "resnet" and in_channels != out_channels:
            raise StageError(f"a {kind} generator adds to its input, so it needs in_channels == out_channels")
        self.kind = kind
        self.config = dict(
            ngf=ngf,
            n_blocks=n_blocks,
            in_channels=in_channels,
            out_channels=out_channels,
            n_down=n_down,
            kind=kind,
            upsample=upsample,
        )
        # Convolutions keep their bias: instance norm without affine would otherwise leave no learned offset.
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        channels = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1), _norm(channels * 2), nn.ReLU(True)]
            channels *= 2
        layers += [ResidualBlock(channels) for _ in range(n_blocks)]
        self.bottleneck_end = len(layers)
        bottleneck_channels = channels
        for _ in range(n_down):
            if upsample == "transpose":
                layers += [nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1)]
            else:
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(channels, channels // 2, 3),
                ]
            layers += [_norm(channels // 2), nn.ReLU(True)]
            channels //= 2
        if kind == "resnet":
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        else:
            layers += [nn.ReflectionPad2d(3), ZeroInitConv(channels, out_channels + (kind == "attention"), 7)]
        self.net = nn.Sequential(*layers)
        if kind == "warp":  # after net, so that init_weights draws net's weights as for residual
            self.flow = ZeroInitConv(bottleneck_channels, 2, 3, padding=1)

    def edit(self, x):
        """(output, mask): the mask in [0, 1] (N, 1, S, S) for `attention`, None for the other kinds."""
        if self.kind == "warp":
            features = self.net[: self.bottleneck_end](x)
            flow = WARP_MAX_SHIFT * torch.tanh(self.flow(features))
            # the warp's change, not the warped image: exactly the input while the flow is 0 (a grid of pixel
            # centres resamples each pixel to itself only up to rounding)
            moved = warp(x, flow) - warp(x, torch.zeros_like(flow))
            return (x + moved + self.net[self.bottleneck_end :](features)).clamp(-1, 1), None
        head = self.net(x)
        if self.kind == "resnet":
            return head, None
        if self.kind == "residual":
            return (x + head).clamp(-1, 1), None
        mask = torch.sigmoid(head[:, -1:].float()).to(head.dtype)
        return (x + mask * head[:, :-1]).clamp(-1, 1), mask

    def forward(self, x, with_mask=False):
        # with_mask: `edit` through forward, for wrappers that only see forward (DistributedDataParallel)
        return self.edit(x) if with_mask else self.edit(x)[0]


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, S, S) resampled at pixel centres shifted by `flow` (N, 2, h, w: x then y, in grid_sample's
    [-1, 1] units), the flow upsampled bilinearly to S x S; edges repeat outside the image."""
    n, _, height, width = images.shape
    flow = F.interpolate(flow.float(), size=(height, width), mode="bilinear", align_corners=False)
    identity = torch.eye(2, 3, device=images.device).expand(n, 2, 3)
    grid = F.affine_grid(identity, (n, 1, height, width), align_corners=False) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(
        images.dtype
    )


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each seeing one receptive-field patch of the image.

    `n_layers` stride-2 4x4 convolutions (the first without norm), one stride-1 4x4, then a 1-channel 4x4 head.
    With n_layers=3 each score sees 70x70 pixels; n_layers=2 sees 34x34, which suits 64-pixel ROIs.
    """

    def __init__(self, ndf=64, n_layers=3, in_channels=3):
        super().__init__()
        self.config = dict(ndf=ndf, n_layers=n_layers, in_channels=in_channels)
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1), _norm(out), nn.LeakyReLU(0.2, True)]
            channels = out
        layers += [nn.Conv2d(channels, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def init_weights(net: nn.Module, std=0.02, generator: torch.Generator = None):
    """Convolution weights ~ N(0, std), biases 0, drawn from `generator` so that init is reproducible; a ZeroInitConv
    is drawn too (so that every kind consumes the same random stream) and then zeroed."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if isinstance(module, ZeroInitConv):
                    module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
    return net


class FakePool:
    """The history buffer of generated images that discriminators train on (Shrivastava et al. 2017).

    Until `size` images are stored, each fake is stored and returned as is. After that each fake, with probability
    1/2, is swapped with a random stored one (the stored one is returned) and otherwise returned as is. This damps
    the oscillation of training D only on the newest generator's output.

    Vectorised for the device: the decisions are drawn on a CPU `torch.Generator` (reproducible, checkpointable,
    no device sync) and applied with index ops. Within one batch the swapped slots are distinct (a permutation), so
    the batch result does not depend on the order of its elements.
    """

    def __init__(self, size: int, generator: torch.Generator):
        self.size, self.generator = size, generator
        self.images = None  # (size, C, H, W) fp32 on the device, allocated on first query
        self.count = 0

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        fakes = fakes.detach().float()
        if self.size == 0:
            return fakes
        if self.images is None:
            self.images = torch.zeros((self.size,) + tuple(fakes.shape[1:]), device=fakes.device)
        out = fakes.clone()
        n_fill = min(self.size - self.count, len(fakes))
        if n_fill:
            self.images[self.count : self.count + n_fill] = fakes[:n_fill]
            self.count += n_fill
        rest = len(fakes) - n_fill
        if rest:
            swap = torch.rand(rest, generator=self.generator) < 0.5
            slots = torch.randperm(self.size, generator=self.generator)[:rest]
            # A batch larger than the pool: one swap per slot at most, so the fakes past `size` are returned as is.
            swap = swap[: len(slots)]
            rows = (torch.arange(len(slots)) + n_fill)[swap]
            slots = slots[swap]
            if len(rows):
                rows, slots = rows.to(fakes.device), slots.to(fakes.device)
                out[rows] = self.images[slots]
                self.images[slots] = fakes[rows]
        return out

    def state_dict(self):
        return {"count": self.count, "images": None if self.images is None else self.images.to("cpu", copy=True)}

    def load_state_dict(self, state, device):
        self.count = int(state["count"])
        self.images = None if state["images"] is None else state["images"].to(device)


def generator_file(config: dict, state_dict: dict) -> dict:
    """What `generator_AB.pt` holds: the weights plus what evaluation needs to rebuild and feed the net."""
    return {"config": dict(config), "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}


def load_generator(path, device="cpu") -> ResnetGenerator:
    """Rebuild a trained generator from `generator_AB.pt`, in eval mode on `device`.

    `config` also records `size` (the ROI side it was trained on) and `value_range` ([-1, 1]). A file without
    `n_down` predates that option and has the recipe's two downsamplings; one without `kind` is a resnet.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StageError(f"generator weights {path} not found; run `dvc repro train` to train them") from None
    cfg = blob["config"]
    net = ResnetGenerator(
        ngf=cfg["ngf"],
        n_blocks=cfg["n_blocks"],
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        n_down=cfg.get("n_down", 2),
        kind=cfg.get("kind", "resnet"),
        upsample=cfg.get("upsample", "transpose"),
    )
    net.load_state_dict(blob["state_dict"])
    net.config.update(cfg)
    return net.to(device).eval()


def read_generator(path, roi: str, device, crop_side: int) -> ResnetGenerator:
    """load_generator for a stage: a missing, damaged or foreign file, or one trained on another crop side, is one
    line saying to retrain `roi`."""
    if not os.path.isfile(path):
        raise StageError(f"generator weights {path} not found; train them with `dvc repro train@{roi}`")
    try:
        generator = load_generator(path, device)
    except StageError:
        raise
    except Exception as err:  # a damaged or foreign file: torch and the state-dict loader raise many types
        first = (str(err).strip().splitlines() or [""])[0]
        raise StageError(
            f"generator weights {path} are unreadable ({type(err).__name__}: {first}); "
            f"retrain with `dvc repro train@{roi}`"
        ) from None
    trained_side = generator.config.get("size")
    if trained_side is not None and int(trained_side) != crop_side:
        raise StageError(
            f"{path} was trained on {trained_side}px crops but the {roi} manifest has {crop_side}px "
            f"crops; retrain with `dvc repro train@{roi}`"
        )
    return generator
