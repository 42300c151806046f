"""Data-parallel training over the processes torchrun starts (issue #12): which rank this process is, and the few
collectives the CycleGAN loop needs.

`python -m stages.train <roi>` is one process: `World()`, whose every method is the identity, so that the
one-process run computes exactly what it did before DDP existed. Under
`torchrun --standalone --nproc_per_node N -m stages.train <roi>` each process is one rank (gloo on CPU; NCCL on
CUDA, one GPU per rank) and the run is the one-process run spread out:
- every rank draws the same epoch plan (same seed) and takes its slice of every batch, so the global batch stays
  `train.batch.<roi>`, which must divide by N;
- the four nets are wrapped in DistributedDataParallel, which averages gradients, so the weights and the Adam
  states stay identical on every rank (weights_digest checks it at the end);
- the fake pool sees the gathered fakes of the whole global batch and every rank keeps the same pool (same seed,
  same input), taking its slice of the pool's answer: the pool in the checkpoint is every rank's pool.
What does differ from one process: the float rounding of summed gradients, and the attention mask penalty, a
hinge on the mean mask area, which is taken on each rank's slice rather than on the whole batch.

Rank 0 alone writes the checkpoint, the generator, the metrics and dvclive; every rank reads the checkpoint.
"""

import hashlib
import os
import sys
from contextlib import contextmanager

import torch

from .errors import StageError


class World:
    """This process's place among the training ranks; `World()` is the one-process run."""

    def __init__(self, rank=0, size=1, local_rank=0, distributed=False):
        self.rank, self.size, self.local_rank, self.distributed = rank, size, local_rank, distributed
        self.main = rank == 0

    def device(self, kind: str) -> torch.device:
        # One GPU per rank: torchrun numbers a node's ranks from 0 (LOCAL_RANK).
        if kind == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return torch.device(kind)

    def wrap(self, net, device):
        """`net` wrapped so that its gradients are averaged across ranks (the net itself in one process)."""
        if not self.distributed:
            return net
        from torch.nn.parallel import DistributedDataParallel

        # The nets hold no buffers (instance norm without running stats); not broadcasting them keeps a forward
        # free of collectives, so that rank 0 may run one alone (the sample grid).
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x`, concatenated along dim 0 in rank order (the order of the slices of the batch)."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    def local(self, x):
        """This rank's slice of a global batch (dim 0)."""
        if not self.distributed:
            return x
        n = len(x) // self.size
        return x[self.rank * n : (self.rank + 1) * n]

    def average(self, values: dict) -> dict:
        """The mean over ranks of each tensor in `values` (each rank's mean over its slice: the global batch's)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        stacked = torch.stack(list(values.values()))
        dist.all_reduce(stacked)
        return dict(zip(values, stacked / self.size))

    def broadcast(self, module):
        """Rank 0's weights of `module` on every rank (a net fitted on each rank may differ on a GPU)."""
        if self.distributed:
            import torch.distributed as dist

            for tensor in module.state_dict().values():
                dist.broadcast(tensor, 0)

    def check_same_weights(self, nets: dict, roi: str):
        """Each rank prints the digest of its weights; an error if any rank's differs from rank 0's."""
        if not self.distributed:
            return
        import torch.distributed as dist

        digest = weights_digest({k: v.state_dict() for k, v in nets.items()})
        print(f"train {roi}: rank {self.rank}/{self.size} weights {digest}", file=sys.stderr, flush=True)
        digests = [None] * self.size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) > 1:
            raise StageError(f"train {roi}: the ranks' weights differ after training ({', '.join(digests)})")


def weights_digest(state_dicts: dict) -> str:
    """sha256 over the nets' tensors, by name: equal on two ranks iff their weights are bit for bit the same."""
    digest = hashlib.sha256()
    for net in sorted(state_dicts):
        for key, tensor in sorted(state_dicts[net].items()):
            digest.update(f"{net}.{key}\0".encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def open_world(device_kind: str):
    """The ranks torchrun started (its RANK, WORLD_SIZE and LOCAL_RANK variables), else the one-process World."""
    if "WORLD_SIZE" not in os.environ:
        yield World()
        return
    import torch.distributed as dist

    rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device_kind == "cuda":
        if local >= torch.cuda.device_count():
            raise StageError(
                f"train: rank {rank} needs GPU {local} but {torch.cuda.device_count()} are visible; "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    try:
        yield World(rank, size, local, distributed=True)
    finally:
        dist.destroy_process_group()
