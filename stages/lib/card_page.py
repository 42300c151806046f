"""The data card's page and pictures: markdown from stages/lib/data_card.py's rows, and matplotlib charts saved as PNGs
whose bytes depend only on the numbers (stages/lib/figures.py).

    from stages.lib.card_page import funnel_chart, page
    funnel_chart(rows, "plots/data_card/funnel.png")
    text = page(card, "../plots/data_card")       # the PNGs linked relative to the page, so GitHub renders them
"""

import numpy as np

from .figures import figure, save_figure

KEPT, OWN, UPSTREAM = "#2ca02c", "#d62728", "#bdbdbd"
EXAMPLES = 3  # source keys listed per reject reason


def funnel_chart(rows: list, path):
    """Horizontal bars, first stage on top: kept, rejected by the stage itself, rejected again from upstream."""
    fig, axes = figure(8, 1.4 + 0.45 * len(rows))
    ax = axes[0, 0]
    y = np.arange(len(rows))[::-1]
    kept = np.array([r["kept"] for r in rows])
    upstream = np.array([r["upstream"] for r in rows])
    own = np.array([r["rejected"] for r in rows]) - upstream
    ax.barh(y, kept, color=KEPT, label="kept")
    ax.barh(y, own, left=kept, color=OWN, label="rejected by this stage")
    ax.barh(y, upstream, left=kept + own, color=UPSTREAM, label="rejected upstream, passed on")
    top = max([r["input"] for r in rows] + [1])
    for yi, r in zip(y, rows):
        ax.text(r["input"] + top * 0.01, yi, f"{r['kept']} of {r['input']}", va="center", fontsize=8)
    ax.set_yticks(y, [r["stage"] for r in rows])
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("images")
    ax.set_title("Images in and kept per stage (kept + rejected = input)")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def balance_chart(balance: dict, roi_balance: dict, path):
    """Grouped bars: the curated faces per label and split; the kept ROI crops per ROI, domain and split."""
    panels = [("curated faces (filter_emotion kept)", balance)] + [
        (f"{roi} manifest (kept crops)", table) for roi, table in roi_balance.items()
    ]
    fig, axes = figure(0.8 + 3.2 * len(panels), 3.4, ncols=len(panels))
    for ax, (title, table) in zip(axes[0], panels):
        rows = list(table)
        splits = list(next(iter(table.values()), {}))
        width = 0.8 / max(1, len(splits))
        for k, split in enumerate(splits):
            xs = np.arange(len(rows)) + (k - (len(splits) - 1) / 2) * width
            counts = [table[r][split] for r in rows]
            bars = ax.bar(xs, counts, width, label=split, color=["#1f77b4", "#ff7f0e", "#7f7f7f"][min(k, 2)])
            ax.bar_label(bars, fontsize=7)
        ax.set_xticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.margins(y=0.12)  # room for the bar labels
    axes[0, 0].set_ylabel("images")
    fig.suptitle("Class balance per split", fontsize=11)
    return save_figure(fig, path)


def _rate(got: dict) -> str:
    if not got["n_test"]:
        return "no test images"
    lo, hi = got["ci"]
    return f"{got['rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def funnel_section(rows: list, plots: str) -> list:
    lines = [
        "## 1. Images in and kept per stage",
        "",
        f"![images kept per stage]({plots}/funnel.png)",
        "",
        "| stage | input | kept | rejected | of them rejected upstream | kept + rejected = input |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = "yes" if r["kept"] + r["rejected"] == r["input"] else "**NO**"
        lines.append(
            f"| {r['stage']} | {r['input']} | {r['kept']} | {r['rejected']} | {r['upstream']} | "
            f"{r['kept']} + {r['rejected']} = {r['kept'] + r['rejected']}: {ok} |"
        )
    lines += [
        "",
        "`input` is the rows of the stage's table: ingest's are every file the source names; filter_quality's and "
        "parse's the images ingest kept; filter_masks' every parsed image; filter_emotion's the faces filter_masks "
        "kept; an ROI's the faces filter_emotion kept. filter_masks rejects again, with the same reason, what "
        "filter_quality rejected (`rejected upstream`).",
        "",
    ]
    return lines


def reasons_section(rows: list, plots: str) -> list:
    lines = ["## 2. Reject reasons", ""]
    if not rows:
        return lines + ["No stage rejected anything.", ""]
    lines += ["| stage | reason | count | lowest ids (source key) |", "|---|---|---:|---|"]
    for r in rows:
        keys = ", ".join(f"`{k}`" for k in r["keys"][:EXAMPLES]) + (", ..." if r["count"] > EXAMPLES else "")
        lines.append(f"| {r['stage']} | `{r['reason']}` | {r['count']} | {keys} |")
    lines += ["", "Ingest's rejects have no pixels in the images table, so they are listed without pictures.", ""]
    for r in rows:
        if r["strip"]:
            shown = f"all {r['count']}" if r["shown"] == r["count"] else f"the {r['shown']} lowest ids of {r['count']}"
            lines += [
                f"**{r['stage']}: `{r['reason']}`** ({shown})",
                "",
                f"![{r['stage']} {r['reason']}]({plots}/{r['strip']})",
                "",
            ]
    return lines


def quality_section(rows: list) -> list:
    lines = ["## 3. Image-quality issues (filter_quality, CleanVision)", ""]
    if not rows:
        return lines + ["filter_quality checked no issue.", ""]
    lines += ["| issue | action | flagged | rejected with it | flagged among the curated faces |"]
    lines += ["|---|---|---:|---:|---:|"]
    lines += [f"| {r['issue']} | {r['action']} | {r['flagged']} | {r['rejected']} | {r['curated']} |" for r in rows]
    lines += [
        "",
        "`flagged` counts every member of a duplicate set, the one kept too; a flagged face rejected by an earlier "
        "issue has that issue as its reason.",
        "",
    ]
    return lines


def _table(title: str, table: dict) -> list:
    splits = list(next(iter(table.values()), {}))
    lines = [f"| {title} | " + " | ".join(splits) + " | total |", "|---" + "|---:" * (len(splits) + 1) + "|"]
    for row, counts in table.items():
        lines.append(f"| {row} | " + " | ".join(str(counts[s]) for s in splits) + f" | {sum(counts.values())} |")
    totals = [sum(counts[s] for counts in table.values()) for s in splits]
    lines.append("| total | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |")
    return lines + [""]


def balance_section(balance: dict, roi_balance: dict, plots: str) -> list:
    lines = ["## 4. Class balance per split", "", f"![class balance]({plots}/class_balance.png)", ""]
    if balance:
        lines += ["The curated faces (filter_emotion kept), label by split:", ""] + _table("label", balance)
    else:
        lines += ["filter_emotion kept no face.", ""]
    if roi_balance:
        lines += ["Each ROI manifest's kept crops, domain by split:", ""] + _roi_table(roi_balance)
    return lines


def _roi_table(roi_balance: dict) -> list:
    splits = list(dict.fromkeys(s for table in roi_balance.values() for counts in table.values() for s in counts))
    lines = ["| ROI | domain | " + " | ".join(splits) + " | total |", "|---|---" + "|---:" * (len(splits) + 1) + "|"]
    for roi, table in roi_balance.items():
        for domain, counts in table.items():
            cells = [str(counts.get(s, 0)) for s in splits] + [str(sum(counts.values()))]
            lines.append(f"| {roi} | {domain} | " + " | ".join(cells) + " |")
    return lines + [""]


def leakage_section(leak: dict, split_by: str, source: str) -> list:
    lines = [
        "## 5. Identity leakage between train and test",
        "",
        f"Splits of `{source}` drawn with `ingest.split_by: {split_by}` (a source's own split, FER2013's `Usage` or "
        "CelebA's partition, is kept as it is). A test image leaks when its `group` (one person or near-duplicate "
        "set with `group`; the image itself with `id`) also has a train image.",
        "",
        "| images | test images n | leaking test images | share [95% Wilson interval] | groups on both sides |",
        "|---|---:|---:|---|---:|",
    ]
    for name, got in leak.items():
        lines.append(f"| {name} | {got['n_test']} | {got['leaked']} | {_rate(got)} | {got['groups_both']} |")
    if split_by == "id":
        note = "With `id` every image is its own group, so this is 0 by construction and says nothing about people:"
        lines += ["", note + " `ingest.split_by: group` draws the split per person and near-duplicate set."]
    return lines + [""]


def page(card: dict, plots: str) -> str:
    """The whole markdown page; `plots` is the PNG folder relative to the page."""
    lines = [
        "# Data card",
        "",
        f"What the curation kept and why, for `{card['source']}`: written by the `data_card` stage "
        "(`dvc repro data_card`) from the stage tables; `dvc plots show` draws its pictures with the other plots.",
        "",
    ]
    lines += funnel_section(card["funnel"], plots)
    lines += reasons_section(card["reasons"], plots)
    lines += quality_section(card["quality"])
    lines += balance_section(card["balance"], card["roi_balance"], plots)
    lines += leakage_section(card["leakage"], card["split_by"], card["source"])
    return "\n".join(lines).rstrip() + "\n"
