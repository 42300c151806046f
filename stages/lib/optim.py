"""Adam without torch.optim, for the nets trained on CPU: the curator's, the translators' and their expression
classifier.

Building any torch.optim optimiser imports torch._dynamo (`Optimizer.add_param_group` is wrapped by
`torch._disable_dynamo`): 1.3 s of import and ~150 MiB of resident memory in every process that trains, for nets
that are never compiled on CPU.

`Adam` makes the update of `torch.optim.Adam(params, lr, betas, weight_decay=wd)` on CPU: Adam's single-tensor path
(L2 weight decay added to the gradient, Kingma & Ba's bias correction), its learning rate read from
`param_groups[0]["lr"]` at each step as torch's is, so a schedule that sets it works on both. `OneCycleAdam` drives
the same update on Smith's one-cycle schedule, as `torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
total_steps=n, pct_start=p)` does (the learning rate rises by cosine from lr/25 to lr over the first `pct_start` of
the steps, then falls to lr/250,000, while beta1 falls from 0.95 to 0.85 and rises back). Both are the same
arithmetic operation for operation, so the weights are the same bit for bit; tests/test_optim.py checks that
against torch. On CUDA the translators keep torch.optim's fused kernels (stages/lib/cyclegan.py).

    opt = Adam(net.parameters(), lr=0.001, betas=(0.5, 0.999))
    loss.backward(); opt.step(); opt.zero_grad()
    opt = OneCycleAdam(net.parameters(), lr=0.002, total_steps=600, weight_decay=1e-4, pct_start=0.2)
"""

import math

import torch


def one_cycle(step: int, total_steps: int, first: float, middle: float, last: float, pct_start: float) -> float:
    """The value at `step` (0-based) of a cosine from `first` to `middle` over the first `pct_start` of the steps,
    then from `middle` to `last` at the last step (OneCycleLR's two phases, the same float operations)."""
    turn = pct_start * total_steps - 1
    if step <= turn:
        start, stop, pct = first, middle, step / turn
    else:
        start, stop, pct = middle, last, (step - turn) / (total_steps - 1 - turn)
    return stop + (start - stop) / 2.0 * (math.cos(math.pi * pct) + 1)


class Adam:
    """torch.optim.Adam's CPU update; `param_groups[0]["lr"]` is the learning rate of the next step (OneCycleAdam
    sets its own instead). Every parameter is kept, as torch keeps it: one without a gradient is skipped at a step."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = list(params)
        self.param_groups = [{"lr": lr}]
        (self.beta1, self.beta2), self.eps, self.weight_decay = betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.updates = [0] * len(self.params)  # per tensor, as Adam counts: one without a gradient is skipped

    @torch.no_grad()
    def step(self):
        self.update(self.param_groups[0]["lr"], self.beta1)

    @torch.no_grad()
    def update(self, lr: float, beta1: float):
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            self.updates[i] += 1
            t = float(self.updates[i])
            grad = param.grad.add(param, alpha=self.weight_decay) if self.weight_decay != 0 else param.grad
            self.exp_avg[i].lerp_(grad, 1 - beta1)
            self.exp_avg_sq[i].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            step_size = lr / (1 - beta1**t)
            denom = (self.exp_avg_sq[i].sqrt() / (1 - self.beta2**t) ** 0.5).add_(self.eps)
            param.addcdiv_(self.exp_avg[i], denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True):
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()  # a zero gradient is still a step, as in torch

    def state_dict(self) -> dict:
        """The moments and per-tensor step counts, for a checkpoint (the learning rate is the caller's to set)."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "updates": list(self.updates)}

    def load_state_dict(self, state: dict):
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"Adam state for {len(state['exp_avg'])} tensors, this optimiser has {len(self.params)}")
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(saved)
        self.updates = [int(n) for n in state["updates"]]


class OneCycleAdam(Adam):
    """Adam whose learning rate and beta1 follow the one-cycle schedule, one `step()` per schedule step."""

    def __init__(
        self,
        params,
        lr: float,
        total_steps: int,
        weight_decay: float = 0.0,
        pct_start: float = 0.3,
        beta2: float = 0.999,
        eps: float = 1e-8,
        momentum: tuple[float, float] = (0.85, 0.95),
    ):
        if total_steps < 1:
            raise ValueError(f"OneCycleAdam needs total_steps >= 1, got {total_steps}")
        super().__init__(params, lr, (momentum[1], beta2), eps, weight_decay)
        self.lr, self.total_steps, self.pct_start, self.momentum = lr, total_steps, pct_start, momentum
        self.steps = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps": self.steps}

    def load_state_dict(self, state: dict):
        super().load_state_dict(state)
        self.steps = int(state["steps"])

    def schedule(self, step: int) -> tuple[float, float]:
        """(learning rate, beta1) at `step`."""
        low, high = self.momentum
        initial = self.lr / 25.0
        lr = one_cycle(step, self.total_steps, initial, self.lr, initial / 1e4, self.pct_start)
        beta1 = one_cycle(step, self.total_steps, high, low, high, self.pct_start)
        return lr, beta1

    @torch.no_grad()
    def step(self):
        if self.steps >= self.total_steps:
            raise RuntimeError(f"OneCycleAdam: step {self.steps + 1} is past its {self.total_steps} steps")
        lr, beta1 = self.schedule(self.steps)
        self.steps += 1
        self.update(lr, beta1)
