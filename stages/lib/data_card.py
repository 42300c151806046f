"""The data card's numbers, from the stage tables (pandas frames with at least id, kept, reason): what each stage kept
and rejected and why, CleanVision's issues, the class balance per split and the identity leakage of the split. Pure;
stages/data_card.py reads the tables, and stages/lib/card_page.py writes the page and draws the pictures.

    from stages.lib import data_card as card
    rows = card.funnel({"ingest": images, "filter_masks": masks}, {"mouth": manifest})   # one row per stage
    card.leakage(images[images.kept])   # test images whose group has a train image, of the test images, with interval
"""

import re

from .intervals import wilson

ROI_PREFIX = "extract_rois:"
SPLITS = ("train", "test")


def _stages(chain: dict, rois: dict):
    """(stage, table, ids rejected by an earlier stage) in card order: the chain one after another, then every ROI
    manifest against the whole chain (the ROIs are cut side by side from the same faces, not one after another)."""
    earlier = set()
    for stage, table in chain.items():
        yield stage, table, frozenset(earlier)
        earlier |= set(table.id[~table.kept])
    for roi, table in rois.items():
        yield ROI_PREFIX + roi, table, frozenset(earlier)


def funnel(chain: dict, rois: dict) -> list:
    """One row per stage: input, kept, rejected, and `upstream`, the rejected rows that carry an earlier stage's
    verdict (filter_masks rejects again what filter_quality rejected), so `rejected - upstream` are the stage's own."""
    rows = []
    for stage, table, earlier in _stages(chain, rois):
        rejected = table.id[~table.kept]
        rows.append(
            {
                "stage": stage,
                "input": len(table),
                "kept": int(table.kept.sum()),
                "rejected": len(rejected),
                "upstream": int(rejected.isin(earlier).sum()),
            }
        )
    return rows


def reasons(chain: dict, rois: dict) -> list:
    """One row per (stage, reason) of the stage's own rejects: count and every id, lowest first; most common reason
    first within a stage, ties by name, so the order is the same on every run."""
    rows = []
    for stage, table, earlier in _stages(chain, rois):
        own = table[~table.kept & ~table.id.isin(earlier)]
        by_reason = {reason: sorted(group.id) for reason, group in own.groupby("reason", sort=True)}
        for reason, ids in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
            rows.append({"stage": stage, "reason": reason, "count": len(ids), "ids": ids})
    return rows


def quality_issues(quality, actions: dict, curated_ids) -> list:
    """One row per issue filter_quality checked (its `is_<issue>_issue` columns, in CleanVision's order): the action
    (reject or report, from its metrics), faces flagged, rejected with it as the reason, and flagged among the
    curated faces (report-only issues stay in the set: grey photos, odd sizes)."""
    curated = quality.id.isin(set(curated_ids))
    rows = []
    for column in quality.columns:
        issue = re.fullmatch(r"is_(.+)_issue", column)
        if issue is None:
            continue
        name, flagged = issue.group(1), quality[column].fillna(False).astype(bool)
        rows.append(
            {
                "issue": name,
                "action": actions.get(name, {}).get("action", "?"),
                "flagged": int(flagged.sum()),
                "rejected": int((quality.reason == name).sum()),
                "curated": int((flagged & curated).sum()),
            }
        )
    return rows


def crosstab(frame, row: str, column: str) -> dict:
    """{row value: {column value: count}} of the frame's rows, both sorted, every column value in every row."""
    columns = _ordered(frame[column].dropna().unique())
    out = {}
    for value in _ordered(frame[row].dropna().unique()):
        counts = frame[column][frame[row] == value].value_counts()
        out[value] = {c: int(counts.get(c, 0)) for c in columns}
    return out


def _ordered(values) -> list:
    """Splits as train, test (then any other), everything else sorted."""
    known = [s for s in SPLITS if s in set(values)]
    return known + sorted(v for v in values if v not in known)


def leakage(images) -> dict:
    """Of the test images in `images` (id, split, group), those whose group also has a train image in `images`:
    {n_test, leaked, rate, ci (95% Wilson), groups_both (groups with images on both sides)}."""
    train_groups = set(images.group[images.split == "train"])
    test = images[images.split == "test"]
    leaked = int(test.group.isin(train_groups).sum())
    n = len(test)
    return {
        "n_test": n,
        "leaked": leaked,
        "rate": leaked / n if n else float("nan"),
        "ci": wilson(leaked, n),
        "groups_both": len(train_groups & set(test.group)),
    }


def plot_name(stage: str, reason: str) -> str:
    """The strip's file name for one reject reason: letters, digits, `_` and `-` only (a reason joins checks with
    `+`, an ROI stage has a `:`), so it is the same path in the markdown, on disk and in DVC's static copy."""
    return "reject-" + re.sub(r"[^A-Za-z0-9_-]", "-", f"{stage}-{reason}") + ".png"
