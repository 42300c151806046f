"""A few steps of a tiny CycleGAN and its expression classifier on a synthetic mouth manifest, for the optimiser tests
(tests/test_optim.py runs it in-process against torch.optim, and in a child process to see what it imports)."""

import copy
import io

import torch

from stages.lib import cyclegan, expression
from stages.lib import params as P
from stages.lib.cyclegan import DeviceData, read_config
from stages.lib.training import load_domains
from tests.conftest import ROOT
from tests.helpers.synthetic_rois import SIZE, TINY


def train_tiny_translator(manifest):
    """(classifier weights, the four nets' weights, the written generator's weights) after 8 steps, a checkpoint's
    round trip into a model built afresh, and one more step."""
    params = copy.deepcopy(P.load(str(ROOT / "params.yaml")))
    params["rois"]["side"]["mouth"] = SIZE
    params["train"].update(copy.deepcopy(TINY), lambda_expression={"mouth": 1.0}, ema={"mouth": 0.9})
    cfg = read_config(params, "mouth")
    a, b, _ = load_domains(str(manifest), cfg)
    judge, _ = expression.fit_expression(a, b, "cpu", cfg.seed)
    model = cyclegan.CycleGAN(cfg, torch.device("cpu"), expression=judge)
    data = DeviceData(a, b, cfg, torch.device("cpu"))
    data.plan_epoch(torch.Generator().manual_seed(0))
    for step in range(8):  # the learning rate set before each step, as train_epoch's linear decay does
        model.set_lr(cfg.lr * (1 - step / 8))
        model.step(*data.batch(step % data.steps_per_epoch))
    saved = io.BytesIO()  # the checkpoint's round trip as training.py makes it
    torch.save(model.state_dict(), saved)
    saved.seek(0)
    resumed = cyclegan.CycleGAN(cfg, torch.device("cpu"), expression=judge)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    resumed.set_lr(cfg.lr / 16)
    resumed.step(*data.batch(0))
    return judge.state_dict(), resumed.state_dict()["nets"], resumed.generator_AB().state_dict()
