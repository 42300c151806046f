"""Face parsing into the canonical 19-class label map (see ../shared/DESIGN.md), with three backends.

- `facemesh` (default, offline): MediaPipe FaceMesh landmarks drawn as polygons (facemesh.py), less the features
  the image does not show (visibility.py).
- `bisenet`, `parsenet`: facexlib's networks with weights from `parse.weights` (facexlib_nets.py).

`read_params` validates the `parse:` block; `make_parser` builds the backend, checking its weights before any work.
The streamed loop that writes `data/parsed/` is runner.parse_table (in the stage's process), workers.py (one parser
per worker process, `parse.workers`) or ray_engine.py (`parse.engine: ray`); all three write the same bytes.
"""

from .. import params as P
from ..errors import StageError

BACKENDS = ("facemesh", "bisenet", "parsenet")
ENGINES = ("local", "ray")


def read_params(params: dict) -> dict:
    cfg = {
        "backend": P.choice(params, "parse.backend", BACKENDS),
        "weights": P.text(params, "parse.weights", default=""),
        "size": P.number(params, "parse.input_side", int, 32, 2048),
        "batch": P.number(params, "parse.batch", int, 1, 1024),
        "min_detect_size": P.number(params, "parse.min_detect_size", int, 0, 4096),
        "max_draw_side": P.number(params, "parse.max_draw_side", int, 256, 16384, default=2048),
        "visibility": read_visibility(params),
        "workers": read_workers(params),
        "engine": P.choice(params, "parse.engine", ENGINES, default="local"),
    }
    P.known("parse.device")  # facexlib backends only
    P.check_unknown(params, ["parse"])
    if cfg["size"] % 32:
        raise StageError(
            f"params: parse.input_side={cfg['size']} must be a multiple of 32 (the networks downsample 32x)"
        )
    if cfg["backend"] != "facemesh":
        if not cfg["weights"]:
            raise StageError(f"params: parse.weights must name the {cfg['backend']} weights file")
        cfg["device"] = P.device(params, "parse.device")
    return cfg


def read_workers(params: dict):
    """`auto` (resolved where the run happens: workers.resolve_workers, ray_engine) or a count >= 1."""
    value = P.get(params, "parse.workers", default="auto")
    if value == "auto":
        return value
    try:
        return P.number(params, "parse.workers", int, 1, 4096)
    except StageError:
        raise StageError(f"params: parse.workers={value!r} must be auto or an integer in [1, 4096]") from None


def read_visibility(params: dict):
    """The FaceMesh visibility limits (VisibilityThresholds), or None when `parse.visibility` is false.

    Each limit in `parse.visibility_limits` overrides its default; a key that is not a limit is an error.
    """
    from .visibility import VisibilityThresholds

    if not P.flag(params, "parse.visibility", default=True):
        return None
    given = P.get(params, "parse.visibility_limits", default={}) or {}
    names = VisibilityThresholds.__dataclass_fields__
    if not isinstance(given, dict) or set(given) - set(names):
        raise StageError(f"params: parse.visibility_limits must map some of {', '.join(names)} to numbers")
    # Every limit is a ratio of luminance differences or lengths; -1..4 bounds them with room to spare.
    return VisibilityThresholds(
        **{name: P.number(params, f"parse.visibility_limits.{name}", float, -1.0, 4.0) for name in given}
    )


def make_parser(cfg: dict):
    if cfg["backend"] == "facemesh":
        from .facemesh import FaceMeshParser

        return FaceMeshParser(
            min_detect_size=cfg["min_detect_size"], visibility=cfg["visibility"], max_draw_side=cfg["max_draw_side"]
        )
    from .facexlib_nets import FacexlibParser

    return FacexlibParser(cfg["backend"], cfg["weights"], cfg["size"], cfg["device"])


def check_model(cfg: dict):
    """Stop before any worker process or Ray actor starts if it could not build its parser: the facexlib weights are
    loaded once here, on the CPU (a missing, unreadable or mismatched file is one line). FaceMesh needs no file."""
    if cfg["backend"] != "facemesh":
        from .facexlib_nets import load_net

        load_net(cfg["backend"], cfg["weights"], "cpu", half=False)
