"""filter_quality: CleanVision's image-quality issues over the kept images; the issues params name reject the row.

Run from the project root (DVC does this):  python -m stages.filter_quality
Reads   data/images (its kept rows are this stage's input; images decoded in memory, a row group at a time)
Params  filter_quality.reject, filter_quality.report (CleanVision issue names), filter_quality.sheet_max,
        filter_quality.thresholds.<issue>.<param> (CleanVision's params; its defaults otherwise)
Writes  data/filtered/filter_quality.parquet  id, kept, reason, and per checked issue is_<issue>_issue, <issue>_score
            (CleanVision's flag and score, low = worse), <issue>_set for duplicates (the lowest id of the row's set)
        metrics/filter_quality.json            input, kept, rejected, kept_fraction, by_reason, issues (per issue:
            action, found, rejected, sets), params (what CleanVision ran with)
        plots/filter_quality/<issue>.png       flagged faces per checked issue, captioned with the score

A row's reason is the first rejecting issue in CleanVision's order (image properties, then exact and near duplicates);
of a duplicate set the lowest id still kept is kept. filter_masks rejects, with the same reason, the rows this
stage rejects (check_contract.py wants filter_masks to cover every parsed row, and parse every kept image).
"""

import os
from collections import Counter

from .lib import params as P
from .lib import paths
from .lib.contact_sheet import contact_sheet
from .lib.errors import StageError, run_stage
from .lib.image_issues import (
    DUPLICATES,
    ISSUES,
    TableImages,
    find_issues,
    flag_column,
    issue_list,
    issue_summary,
    issue_table,
    read_thresholds,
    score_column,
    set_column,
)
from .lib.tables import kept_summary, write_json_atomic, write_table_atomic

BLOCK = "filter_quality"
SHEET_COLS, SHEET_THUMB = 8, 128  # 128 px: blur and noise show at thumbnail size


def read_params(params):
    reject = issue_list(params, f"{BLOCK}.reject")
    report = issue_list(params, f"{BLOCK}.report")
    both = [i for i in reject if i in report]
    if both:
        raise StageError(f"params: {both[0]!r} is in both {BLOCK}.reject and {BLOCK}.report; keep it in one")
    checked = set(reject) | set(report)
    if "near_duplicates" in checked and "exact_duplicates" not in checked:
        # CleanVision drops a near set that is also an exact set, so alone it would miss pixel-identical copies
        raise StageError(f"params: near_duplicates needs exact_duplicates in {BLOCK}.reject or {BLOCK}.report too")
    overrides = read_thresholds(params, f"{BLOCK}.thresholds", checked)
    sheet_max = P.number(params, f"{BLOCK}.sheet_max", int, lo=0, default=32)
    P.check_unknown(params, [BLOCK])
    return set(reject), overrides, sheet_max


def sheet_rows(rows, issue, sheet_max) -> list:
    """The faces a sheet shows: of an image property the flagged rows with the lowest ids (a fair sample, as ids are
    hashes), worst score first; of duplicates whole sets by their label, while they fit."""
    flagged = [r for r in rows if r[flag_column(issue)]]
    if issue not in DUPLICATES:
        return sorted(flagged[:sheet_max], key=lambda r: (r[score_column(issue)], r["id"]))
    picked = []
    for label in sorted({r[set_column(issue)] for r in flagged}):
        members = sorted((r for r in flagged if r[set_column(issue)] == label), key=lambda r: (not r["kept"], r["id"]))
        if picked and len(picked) + len(members) > sheet_max:
            break
        picked += members
    return picked[:sheet_max]


def caption(row, issue) -> str:
    score = f"{row[score_column(issue)]:.3f}"
    # x: rejected by this issue; x<reason>: by an earlier one
    mark = "" if row["kept"] else " x" if row["reason"] == issue else f" x{row['reason']}"
    return f"{score} {row['id'][:6]}{mark}"


def write_sheets(table, images: TableImages, sheet_max: int, plots=paths.plots_dir(BLOCK)):
    """One sheet per checked issue (a "(none)" sheet when nothing is flagged), so the plots list stays fixed."""
    os.makedirs(plots, exist_ok=True)
    checked = [i for i in ISSUES if flag_column(i) in table.column_names]
    for stale in sorted(set(os.listdir(plots)) - {f"{i}.png" for i in checked}):
        if stale.endswith(".png"):
            os.unlink(os.path.join(plots, stale))
    rows, index = table.to_pylist(), {image_id: i for i, image_id in enumerate(images.ids)}
    for issue in checked:
        shown = sheet_rows(rows, issue, sheet_max)
        thumbs = [images.pixels(index[r["id"]]) for r in shown]
        contact_sheet(
            thumbs, [caption(r, issue) for r in shown], os.path.join(plots, f"{issue}.png"), SHEET_COLS, SHEET_THUMB
        )


def main():
    params = P.load()
    reject, overrides, sheet_max = read_params(params)
    images = TableImages(paths.IMAGES)
    found = find_issues(images, overrides)
    table = issue_table(images.ids, found, reject)
    write_table_atomic(table, paths.FILTER_QUALITY)
    counts, reasons = kept_summary(table)
    issues = issue_summary(table, reject)
    by_reason = dict(sorted(Counter(reasons).items()))
    write_json_atomic(
        {**counts, "by_reason": by_reason, "issues": issues, "params": found.params}, paths.metrics_file(BLOCK)
    )
    write_sheets(table, images, sheet_max)
    found_line = ", ".join(f"{i} {e['found']}" for i, e in issues.items())
    print(f"{BLOCK}: kept {counts['kept']}/{counts['input']}; rejected {by_reason}; found {found_line}")


if __name__ == "__main__":
    run_stage(main)
