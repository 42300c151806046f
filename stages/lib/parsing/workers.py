"""`parse.workers` > 1: one parser per worker process, chunks of rows dispatched in order, results written in order.

MediaPipe's FaceMesh is CPU-only and takes one image at a time, so one process uses one core. Each worker builds its
own parser from the parse cfg (make_parser) and runs whole chunks (runner.parse_chunk); the stage's process reads
the kept rows, hands out chunks of `parse.batch` rows and writes each chunk's rows when its turn comes, so the
shards are byte-identical to `workers: 1`. Workers are spawned, not forked: MediaPipe's and torch's threads and
locks do not survive a fork. At most two chunks per worker are in flight, so memory stays flat.

How many (resolve_workers): on cuda, one in-process model, whatever the param says: the GPU takes whole batches and
the prepare/finish threads keep it fed, while more processes would each hold a copy of the model on the one device.
`auto` is every core this process may use, but no more than one worker per ROWS_PER_WORKER kept rows, so small runs
stay in-process and pay no start-up; an explicit count is taken as given, up to one worker per chunk.
"""

import atexit
import math
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import StageError
from ..params import usable_cores
from . import make_parser
from .runner import Output, check_input, count_kept, kept_chunks, parse_chunk

# A spawned FaceMesh worker gives its first result 0.7 s after the pool starts on the 2-core VM (1.4 s for two at
# once), the time of 50-100 photos parsed (~15 ms CPU each); below that a worker costs more than it brings.
ROWS_PER_WORKER = 100
_STATE = {}  # this worker process's cfg, parser and quiet-stderr block


def resolve_workers(cfg, kept_rows) -> int:
    """The worker processes a local run of `kept_rows` rows gets (see the module docstring)."""
    if cfg.get("device") is not None and cfg["device"].type == "cuda":
        return 1
    chunks = math.ceil(kept_rows / cfg["batch"])
    if cfg["workers"] == "auto":
        return max(1, min(usable_cores(), chunks, math.ceil(kept_rows / ROWS_PER_WORKER)))
    return max(1, min(cfg["workers"], chunks))


def worker_parser(cfg, threads):
    """The parser of a worker process or Ray actor, built once. Under FaceMesh the worker's stderr is quiet for the
    rest of its life (MediaPipe's C++ logs from background threads; see stages/lib/quiet.py); torch is held to
    `threads` intra-op threads so that the workers together use the cores once."""
    if "parser" not in _STATE:
        if cfg["backend"] == "facemesh":
            from ..quiet import quiet_stderr

            _STATE["quiet"] = quiet_stderr()  # kept referenced: a collected generator would restore fd 2
            _STATE["quiet"].__enter__()
        else:
            import torch

            torch.set_num_threads(threads)
        _STATE["parser"] = make_parser(cfg)
    return _STATE["parser"]


def _init(cfg, threads):
    _STATE["cfg"], _STATE["threads"] = cfg, threads
    # A worker's results are sent by the time it exits, so its interpreter teardown (MediaPipe's graph and every
    # module, ~0.2 s that the stage's shutdown waits for) is skipped as a stage's is (errors.run_stage). Registered
    # first, this runs after the worker's other exit handlers; multiprocessing's own exit work runs before them.
    atexit.register(os._exit, 0)


def _work(chunk, want_tiles):
    # The parser is built by the first task, not the initializer, so that its errors (a bad weights file) come back
    # as that task's exception rather than as a broken pool.
    return parse_chunk(worker_parser(_STATE["cfg"], _STATE["threads"]), chunk, want_tiles)


def parse_table_workers(images_path, out_path, cfg, workers, progress=None, sheet_tiles=24):
    """parse_table's output with `workers` spawned processes; returns (stats, contact sheet)."""
    check_input(images_path)
    out = Output(out_path, count_kept(images_path), cfg["backend"], progress, sheet_tiles)
    threads = max(1, usable_cores() // workers)
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=(cfg, threads)
    )
    worker_cpu = model_cpu = 0.0

    def write(future):
        nonlocal worker_cpu, model_cpu
        rows, tiles, model, cpu = future.result()
        worker_cpu, model_cpu = worker_cpu + cpu, model_cpu + model
        out.write(rows, tiles)

    try:
        with out:
            pending, submitted = deque(), 0
            for chunk in kept_chunks(images_path, cfg["batch"]):
                pending.append(pool.submit(_work, chunk, max(0, sheet_tiles - submitted)))
                submitted += len(chunk)
                if len(pending) >= 2 * workers:
                    write(pending.popleft())
            while pending:
                write(pending.popleft())
    except BrokenProcessPool:
        raise StageError(
            "parse: a worker process died (out of memory, or a crash in the parser); "
            "rerun with parse.workers: 1 to see the error in the stage's own process"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out.summary("local", workers, out.own_cpu() + worker_cpu, model_cpu)
