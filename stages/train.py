"""Stage `train@<roi>`: train the unpaired CycleGAN (source emotion A <-> target emotion B) for one ROI.

Run: `python -m stages.train mouth` from the project root (or `dvc repro train@mouth`); on N processes (CPUs with
gloo, or one GPU each with NCCL): `torchrun --standalone --nproc_per_node N -m stages.train mouth`
(stages/lib/distributed.py; README "Training on several processes").
Reads `data/rois/<roi>.parquet` (kept rows of split=train) and the `train:` and `rois.side` params. Writes
`models/cyclegan/<roi>/generator_AB.pt` (load with `stages.lib.networks.load_generator`), the resumable
`models/cyclegan/<roi>/checkpoint.pt`, dvclive curves and sample grids in `dvclive/<roi>/`, and
`metrics/train_<roi>.json`. A rerun after an interruption resumes from the last finished epoch.
"""

import sys

from stages.lib import params
from stages.lib.cyclegan import read_config
from stages.lib.distributed import open_world
from stages.lib.errors import StageError, run_stage
from stages.lib.training import Paths, train_roi

# The demo's recipes (params.yaml, README "Training") were measured with two intra-op threads, and a GAN's outcome
# follows its float bits: retrained on one thread (2026-12-01) the demo's face went from transfer_gain 0.426
# [0.337, 0.525] to 0 [0, 0] and the mouth from 0.782 [0.703, 0.851] to 0.525 [0.426, 0.624]. Two threads on every
# machine keep the committed weights reproducible (under load they are slow: the mouth took 545 s vs 58 s on one).
TRAIN_THREADS = 2


def main(argv):
    if len(argv) != 1:
        raise StageError("usage: python -m stages.train <roi>")
    roi = argv[0]
    cfg = read_config(params.load(), roi)
    params.pin_torch_threads(TRAIN_THREADS)
    with open_world(cfg.device) as world:
        train_roi(cfg, Paths(roi), world=world)


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
