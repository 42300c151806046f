"""OneCycleAdam against its reference, torch.optim.Adam driven by OneCycleLR: the same weights bit for bit."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from stages.lib.curator import CuratorNet, FeatureHead
from stages.lib.optim import OneCycleAdam
from tests.conftest import ROOT


def _train(net, make_opt, steps, seed=0):
    """`steps` seeded updates of `net` on random batches; returns its weights as one flat tensor."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from the global generator
    shape = (8, 3, 16, 16) if isinstance(net, CuratorNet) else (8, 20)
    step = make_opt(net)
    for _ in range(steps):
        x, y = torch.randn(shape, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        step()
    return torch.cat([p.detach().flatten() for p in net.state_dict().values() if p.is_floating_point()])


def _reference(total, lr, wd, pct):
    def make(net):
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=pct)

        def step():
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

        return step

    return make


def _ours(total, lr, wd, pct):
    def make(net):
        opt = OneCycleAdam(net.parameters(), lr=lr, total_steps=total, weight_decay=wd, pct_start=pct)

        def step():
            opt.step()
            opt.zero_grad()

        return step

    return make


@pytest.mark.parametrize(
    "make_net, total, taken, lr, wd, pct",
    [
        (lambda: FeatureHead(20, 3), 40, 40, 0.002, 1e-4, 0.2),  # the curator's settings, every step
        (lambda: FeatureHead(20, 3), 40, 23, 0.01, 0.0, 0.3),  # stopped early (skipped batches), no decay
        (lambda: FeatureHead(20, 3), 3, 3, 0.002, 1e-4, 0.2),  # fewer steps than the warm-up's one
        (lambda: CuratorNet(3, 3, width=4), 12, 12, 0.002, 1e-4, 0.2),  # the scratch CNN: BatchNorm buffers too
    ],
)
def test_weights_equal_torch_adam_with_one_cycle_bit_for_bit(make_net, total, taken, lr, wd, pct):
    torch.manual_seed(3)
    ref_net = make_net()
    our_net = make_net()
    our_net.load_state_dict(ref_net.state_dict())
    start = torch.cat([p.detach().flatten().clone() for p in ref_net.parameters()])
    ref = _train(ref_net, _reference(total, lr, wd, pct), taken)
    ours = _train(our_net, _ours(total, lr, wd, pct), taken)
    assert not torch.equal(start, torch.cat([p.detach().flatten() for p in our_net.parameters()]))  # it trained
    assert torch.equal(ref, ours)


def test_parameter_without_gradient_is_left_alone_and_its_count_kept():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = OneCycleAdam([a, b], lr=0.1, total_steps=4)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and not torch.equal(a, torch.ones(3))
    assert opt.updates == [1, 0]


def test_steps_past_the_schedule_are_refused():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = OneCycleAdam([p], lr=0.1, total_steps=1)
    p.grad = torch.ones(2)
    opt.step()
    with pytest.raises(RuntimeError, match="past its 1 steps"):
        opt.step()


def test_training_the_curator_does_not_import_torch_dynamo():
    """The point of the module: ~150 MiB and 1.3 s of torch._dynamo kept out of train_curator's process."""
    code = (
        "import sys, numpy as np\n"
        "from stages.lib.curator import CuratorConfig, train_net\n"
        "x = np.random.default_rng(0).normal(size=(40, 2, 20)).astype(np.float32)\n"
        "y = np.arange(40) % 2\n"
        "train_net(x, y, 2, CuratorConfig(epochs=1, batch=16), 'cpu', seed=0)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_translators_train_as_with_torch_adam_bit_for_bit(tmp_path, monkeypatch):
    """The CycleGAN step and the expression classifier's fit, with optim.Adam on CPU and with torch.optim.Adam in its
    place: the same weights, bit for bit (learning rate changed every step, a state_dict round trip included)."""
    from stages.lib import cyclegan, expression
    from tests.helpers.synthetic_rois import SIZE, write_manifest
    from tests.helpers.tiny_translator import train_tiny_translator

    manifest = write_manifest(tmp_path / "mouth.parquet", size=SIZE, n_train=12)
    ours = flat_weights(*train_tiny_translator(manifest))
    monkeypatch.setattr(expression, "Adam", torch.optim.Adam)
    monkeypatch.setattr(cyclegan, "Adam", torch.optim.Adam)
    reference = flat_weights(*train_tiny_translator(manifest))
    assert ours.keys() == reference.keys() and len(ours) > 40
    assert all(torch.equal(ours[k], reference[k]) for k in ours), [
        k for k in ours if not torch.equal(ours[k], reference[k])
    ][:5]


def flat_weights(judge, nets, ema):
    """One {name: tensor} of the classifier's, the four nets' and the written generator's weights."""
    out = {f"judge.{k}": v for k, v in judge.items()} | {f"ema.{k}": v for k, v in ema.items()}
    return out | {f"{net}.{k}": v for net, state in nets.items() for k, v in state.items()}


def test_training_a_translator_does_not_import_torch_dynamo(tmp_path):
    code = (
        "import pathlib, sys\n"
        "from tests.helpers.synthetic_rois import SIZE, write_manifest\n"
        "from tests.helpers.tiny_translator import train_tiny_translator\n"
        f"manifest = write_manifest(pathlib.Path({str(tmp_path)!r}) / 'mouth.parquet', size=SIZE, n_train=12)\n"
        "train_tiny_translator(manifest)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "False"
