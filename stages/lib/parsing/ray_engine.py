"""`parse.engine: ray`: the same parse on Ray Data, on this machine or on the cluster that RAY_ADDRESS names.

Ray Data reads the image shards; `map_batches` hands batches to a pool of ParseActor actors, each holding one parser
built like a worker process's (workers.worker_parser): one CPU each for FaceMesh and the facexlib nets on CPU, one
GPU each on cuda. Ray keeps the input order (preserve_order), and the stage re-batches the rows it gets back into
chunks of `parse.batch` rows before writing them, so the shards are those of `engine: local`, byte for byte: a row's
result does not depend on which rows share its batch (FaceMesh takes one image at a time; the nets run each image of
a batch independently). The contact sheet's first rows are decoded again here, as runner._prepare decodes them.

The read tasks ask for no CPU: an actor pool that holds every CPU would otherwise leave none for them and the run
would wait forever (the read is light next to the model). Ray's newer file listing (DataSourceV2) starts a listing
task that cannot be given zero CPUs, so the classic Parquet reader is used.
"""

import logging
import os

import pyarrow as pa
import pyarrow.compute as pc

from .. import tables
from ..codec import decode_png
from ..errors import StageError
from .runner import (
    INPUT_COLUMNS,
    SCHEMA,
    Output,
    _prepare,
    check_input,
    count_kept,
    kept_chunks,
    parse_chunk,
    sheet_tile,
)
from .workers import worker_parser

INSTALL = "pip install 'ray[data]==2.60.0'"
CPU_COLUMNS = ("_cpu_s", "_model_cpu_s")  # each batch's CPU time rides along in its first row, dropped before writing


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise StageError(
            f"parse.engine=ray needs Ray, which is not installed here; install it with: {INSTALL}"
        ) from None
    return ray


class ParseActor:
    """One parser in one Ray worker: a batch of images-table rows in, its kept rows parsed (runner's SCHEMA) out."""

    def __init__(self, cfg):
        self.parser = worker_parser(cfg, threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = batch.select(INPUT_COLUMNS).to_pydict()
        chunk = [(i, image) for i, kept, image in zip(cols["id"], cols["kept"], cols["image"]) if kept]
        rows, _, model, cpu = parse_chunk(self.parser, chunk, 0)
        n = len(chunk)
        table = pa.Table.from_pydict(rows, schema=SCHEMA)
        for name, value in zip(CPU_COLUMNS, (cpu, model)):
            table = table.append_column(name, pa.array([value] + [0.0] * (n - 1) if n else [], pa.float64()))
        return table


class _DecodeOnly:
    """A stand-in parser for runner._prepare: the contact sheet needs the decoded image, not the model input."""

    def prepare(self, image):
        return None, 0


def connect(ray) -> bool:
    """Use the Ray instance already started in this process, else the cluster at RAY_ADDRESS (shipping the stages
    package to its workers), else a fresh local instance: never one that a stale /tmp/ray file points at. True when
    this call connected, so that the caller disconnects (a stage skips the interpreter's teardown, and with it Ray's
    atexit shutdown, which would otherwise stop the local instance's processes)."""
    if ray.is_initialized():
        return False
    address, runtime_env = os.environ.get("RAY_ADDRESS") or "local", None
    if address != "local":
        runtime_env = {"py_modules": [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]}
    ray.init(
        address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env=runtime_env,
    )
    return True


def actor_count(ray, cfg, gpu) -> int:
    """`parse.workers`, or with `auto` one actor per CPU (per GPU on cuda) of the cluster."""
    if cfg["workers"] != "auto":
        return cfg["workers"]
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if gpu else "CPU", 1)))


def _dataset(ray, images_path, cfg, actors, gpu):
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the stage's own bar counts the rows written
    ctx.use_datasource_v2 = False  # see the module docstring
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Paths and weights absolute: Ray's workers need not share this process's working directory.
    files = [os.path.abspath(f) for f in tables.shard_paths(images_path)]
    cfg = dict(cfg, weights=os.path.abspath(cfg["weights"]) if cfg["weights"] else "")
    return ray.data.read_parquet(files, columns=INPUT_COLUMNS, num_cpus=0).map_batches(
        ParseActor,
        fn_constructor_args=(cfg,),
        batch_size=cfg["batch"],
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if gpu else 0,
    )


def _sheet_tiles(images_path, head, sheet_tiles):
    """The contact-sheet tiles of the first rows, as runner._finish draws them."""
    first = _prepare(_DecodeOnly(), next(kept_chunks(images_path, sheet_tiles), []))
    tiles = []
    for p, row in zip(first, head):
        if p.image is not None and not row["error"]:
            tiles.append(sheet_tile(p.image, decode_png(row["label_map"]), row["id"], row["face_found"]))
    return tiles


def stage_error_in(err):
    """The message of a StageError an actor raised, wherever Ray wrapped it: as the cause, or as the last line of an
    ActorDiedError's text (the stage checks the model first, so this is the fallback), or None."""
    prefix, seen = f"{StageError.__module__}.{StageError.__name__}: ", set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err) is StageError:  # not Ray's RayTaskError(StageError), whose text is the whole traceback
            return str(err)
        lines = str(err).strip().splitlines()
        if lines and lines[-1].startswith(prefix):
            return lines[-1][len(prefix) :]
        err = getattr(err, "cause", None) or err.__cause__
    return None


def parse_table_ray(images_path, out_path, cfg, progress=None, sheet_tiles=24):
    """parse_table's output computed by Ray actors; returns (stats, contact sheet)."""
    ray = import_ray()
    check_input(images_path)
    try:
        return _run(ray, images_path, out_path, cfg, progress, sheet_tiles)
    except Exception as err:
        message = stage_error_in(err)
        if message is None:
            raise
        raise StageError(message) from None


def _run(ray, images_path, out_path, cfg, progress, sheet_tiles):
    out = Output(out_path, count_kept(images_path), cfg["backend"], progress, sheet_tiles)
    connected = connect(ray)
    try:
        return _parse_on(ray, images_path, out, cfg, sheet_tiles)
    finally:
        if connected:
            ray.shutdown()


def _parse_on(ray, images_path, out, cfg, sheet_tiles):
    gpu = cfg.get("device") is not None and cfg["device"].type == "cuda"
    actors = actor_count(ray, cfg, gpu)
    worker_cpu = model_cpu = 0.0
    head = []
    with out:
        for batch in _dataset(ray, images_path, cfg, actors, gpu).iter_batches(
            batch_size=cfg["batch"], batch_format="pyarrow"
        ):
            if batch.num_rows == 0:
                continue
            worker_cpu += pc.sum(batch["_cpu_s"]).as_py()
            model_cpu += pc.sum(batch["_model_cpu_s"]).as_py()
            rows = batch.select(SCHEMA.names).to_pydict()
            if len(head) < sheet_tiles:
                head.extend(
                    batch.slice(0, sheet_tiles - len(head))
                    .select(["id", "face_found", "label_map", "error"])
                    .to_pylist()
                )
            out.write(rows)
        out.tiles = _sheet_tiles(images_path, head, sheet_tiles)
    return out.summary("ray", actors, out.own_cpu() + worker_cpu, model_cpu)
