import pytest
import torch

from stages.lib.errors import StageError
from stages.lib.networks import (
    FakePool,
    PatchDiscriminator,
    ResnetGenerator,
    generator_file,
    init_weights,
    load_generator,
    warp,
)


def test_generator_keeps_shape_and_range():
    g = init_weights(ResnetGenerator(ngf=4, n_blocks=1), generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    # c7s1, 2 down, n_blocks x 2 convs, 2 up, c7s1
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 1 + 2 + 2 + 2 + 1
    assert isinstance(g.net[0], torch.nn.ReflectionPad2d) and isinstance(g.net[-1], torch.nn.Tanh)


def test_generator_with_one_downsampling_keeps_a_larger_bottleneck(tmp_path):
    g = init_weights(ResnetGenerator(ngf=4, n_blocks=1, n_down=1), generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert g(x).shape == x.shape
    strided = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 1 and g.net[: 4 + 3](x).shape[-1] == 16  # c7s1 block, one down block: 16x16
    # the saved config rebuilds the same net; a file without n_down is read as the recipe's two
    path = tmp_path / "g.pt"
    torch.save(generator_file(g.config, g.state_dict()), path)
    assert torch.equal(load_generator(path)(x), g.eval()(x))
    old = ResnetGenerator(ngf=4, n_blocks=1)
    config = {k: v for k, v in old.config.items() if k != "n_down"}
    torch.save(generator_file(config, old.state_dict()), path)
    assert load_generator(path).config["n_down"] == 2


def test_patch_discriminator_grid_and_receptive_field():
    assert PatchDiscriminator(4, n_layers=2)(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 14, 14)
    assert PatchDiscriminator(4, n_layers=3)(torch.zeros(1, 3, 128, 128)).shape == (1, 1, 14, 14)
    # A 70x70 receptive field for n_layers=3. Instance norm spreads gradients over the whole image through its
    # statistics, so measure the convolutions' field with the norms taken out.
    d = PatchDiscriminator(2, n_layers=3).double()
    for i, layer in enumerate(d.net):
        if isinstance(layer, torch.nn.InstanceNorm2d):
            d.net[i] = torch.nn.Identity()
    x = torch.zeros(1, 3, 128, 128, dtype=torch.double, requires_grad=True)
    d(x)[0, 0, 7, 7].backward()  # a central score, so padding does not clip its field
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    assert rows.max() - rows.min() + 1 == 70


def test_init_is_normal_002_and_reproducible():
    a = init_weights(ResnetGenerator(16, 2), generator=torch.Generator().manual_seed(1))
    b = init_weights(ResnetGenerator(16, 2), generator=torch.Generator().manual_seed(1))
    w = torch.cat([m.weight.flatten() for m in a.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all(m.bias.abs().sum() == 0 for m in a.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_instance_norm_statistics_in_fp32_under_bf16():
    g = ResnetGenerator(4, 1)
    x = torch.rand(1, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = g(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), g(x), atol=0.05)


def test_fake_pool_fills_then_swaps_half():
    pool = FakePool(4, torch.Generator().manual_seed(0))
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and pool.count == 4  # filling: returned as is
    swapped = 0
    for i in range(50):
        new = torch.full((2, 1, 1, 1), 100.0 + i)
        out = pool.query(new)
        returned_old = out != new
        swapped += int(returned_old.sum())
        # a swapped-out image came from the pool, and the new one took its place
        assert all(
            v.item() in set(pool.images.flatten().tolist()) | set(range(4)) | set(range(100, 150))
            for v in out[returned_old]
        )
        assert pool.count == 4
    assert 30 < swapped < 70  # about half of 100
    zero = FakePool(0, torch.Generator())
    assert torch.equal(zero.query(first), first)


def test_fake_pool_state_round_trip_continues_identically():
    a = FakePool(3, torch.Generator().manual_seed(5))
    for i in range(3):
        a.query(torch.full((2, 1, 2, 2), float(i)))
    gen = torch.Generator()
    b = FakePool(3, gen)
    b.load_state_dict(a.state_dict(), "cpu")
    gen.set_state(a.generator.get_state())
    x = torch.full((2, 1, 2, 2), 9.0)
    assert torch.equal(a.query(x), b.query(x)) and torch.equal(a.images, b.images)


def test_load_generator_rebuilds_from_file(tmp_path):
    g = init_weights(ResnetGenerator(4, 2), generator=torch.Generator().manual_seed(3))
    path = tmp_path / "generator_AB.pt"
    torch.save(generator_file(dict(g.config, size=32, roi="mouth"), g.state_dict()), path)
    h = load_generator(path, "cpu")
    assert not h.training and h.config["size"] == 32
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(g(x), h(x))


@pytest.mark.parametrize("pool_size, batch", [(2, 5), (1, 8), (3, 3), (4, 1), (0, 6), (5, 16)])
def test_the_pool_returns_a_batch_of_fakes_or_stored_images_for_any_sizes(pool_size, batch):
    pool = FakePool(pool_size, torch.Generator().manual_seed(1))
    seen = []
    for step in range(4):
        fakes = torch.full((batch, 1, 2, 2), float(step)) + torch.arange(batch).view(-1, 1, 1, 1) / 100
        out = pool.query(fakes)
        assert out.shape == fakes.shape
        seen += [f for f in fakes]
        # every returned image is this batch's fake or one stored earlier, and no earlier image comes back twice
        returned = [o for o, f in zip(out, fakes) if not torch.equal(o, f)]
        assert all(any(torch.equal(o, s) for s in seen) for o in returned)
        assert len({tuple(o.flatten().tolist()) for o in returned}) == len(returned)


@pytest.mark.parametrize("kind", ["residual", "attention", "warp"])
def test_identity_initialised_generators_return_their_input_at_step_0(kind, tmp_path):
    g = init_weights(
        ResnetGenerator(ngf=4, n_blocks=1, n_down=1, kind=kind), generator=torch.Generator().manual_seed(0)
    )
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(g(x), x)
    out, mask = g.edit(x)
    assert torch.equal(out, x)
    if kind == "attention":  # the mask starts half open, so the edit's gradient reaches the delta head from step 0
        assert mask.shape == (3, 1, 16, 16) and torch.allclose(mask, torch.full_like(mask, 0.5))
    else:
        assert mask is None
    # the published head is drawn afresh: at step 0 its output is not the input
    resnet = init_weights(ResnetGenerator(ngf=4, n_blocks=1, n_down=1), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(resnet(x), x, atol=0.1)
    # one optimiser step moves it off the identity, and the saved file rebuilds the same kind
    opt = torch.optim.Adam(g.parameters(), lr=0.01)
    (g(x) - 1).abs().mean().backward()
    opt.step()
    assert not torch.equal(g(x), x)
    path = tmp_path / "g.pt"
    torch.save(generator_file(g.config, g.state_dict()), path)
    loaded = load_generator(path)
    assert loaded.kind == kind and torch.equal(loaded(x), g.eval()(x))


def test_warp_moves_pixels_by_its_flow_and_learns_it_from_step_0():
    # a constant flow of one pixel to the right (2 / S in grid units) samples each pixel from its right neighbour
    images = torch.rand(2, 3, 16, 16)
    flow = torch.zeros(2, 2, 4, 4)
    flow[:, 0] = 2 / 16
    shifted = warp(images, flow)
    assert torch.allclose(shifted[..., :-1], images[..., 1:], atol=1e-5)
    assert torch.allclose(shifted[..., -1], images[..., -1], atol=1e-5)  # the border repeats
    g = init_weights(
        ResnetGenerator(ngf=4, n_blocks=1, n_down=2, kind="warp"), generator=torch.Generator().manual_seed(0)
    )
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g(x).mean().backward()
    # the flow head starts at zero yet its gradient is not zero: the image's own gradient carries it
    assert g.flow.weight.grad.abs().sum() > 0
    # and a flow of the largest shift stays inside the crop's border: the output is still an image in [-1, 1]
    with torch.no_grad():
        g.flow.bias.fill_(100.0)
        assert (g(x) - x).abs().max() > 0.1 and g(x).abs().max() <= 1


def test_unknown_generator_kind_is_a_one_line_error():
    with pytest.raises(StageError, match="unknown generator 'unet'"):
        ResnetGenerator(kind="unet")


def test_resize_upsampling_has_no_transposed_convolution_and_reloads(tmp_path):
    g = init_weights(
        ResnetGenerator(ngf=4, n_blocks=1, n_down=2, kind="residual", upsample="resize"),
        generator=torch.Generator().manual_seed(0),
    )
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, torch.nn.Upsample) for m in g.modules()) == 2
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.nn.init.normal_(g.net[-1].weight, std=0.02)  # off the identity, so the round trip compares real outputs
    path = tmp_path / "g.pt"
    torch.save(generator_file(g.config, g.state_dict()), path)
    assert torch.equal(load_generator(path)(x), g.eval()(x)) and g(x).shape == x.shape
    with pytest.raises(StageError, match="unknown upsampling"):
        ResnetGenerator(upsample="bilinear")
