"""dvclive runs of the stages: what `dvc metrics diff`, `dvc exp show` and `dvc plots` read.

from stages.lib.live import open_live, log_with_intervals
live = open_live("dvclive/evaluate/mouth")
"""


def open_live(live_dir):
    """A fresh dvclive run in `live_dir` that writes only its own files (the stage's dvc.yaml declares them)."""
    from dvclive import Live

    return Live(live_dir, resume=False, dvcyaml=False, save_dvc_exp=False, report=None)


def log_with_intervals(metrics: dict, live_dir: str):
    """The numbers with intervals as scalars DVC can show: `dvc metrics diff` and `dvc exp show` drop list values, so
    each `<name>_ci: [lo, hi]` becomes `<name>_lo` / `<name>_hi` beside `<name>`; n_test as it is."""
    live = open_live(live_dir)
    live.log_metric("n_test", metrics["n_test"], plot=False)
    for key in sorted(k[:-3] for k, v in metrics.items() if k.endswith("_ci") and v):
        if metrics.get(key) is not None:
            lo, hi = metrics[f"{key}_ci"]
            for name, value in ((key, metrics[key]), (f"{key}_lo", lo), (f"{key}_hi", hi)):
                live.log_metric(name, round(float(value), 6), plot=False)
    live.make_summary()


def log_scalars(metrics: dict, live_dir: str):
    """The numeric top-level values of `metrics` (not bools, lists or dicts), for `dvc exp show`."""
    live = open_live(live_dir)
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            live.log_metric(name, value, plot=False)
    live.make_summary()
