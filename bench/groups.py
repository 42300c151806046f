"""Identity groups (`ingest.split_by: group`) on the real photos of ../shared/data/facial_expressions.

Run from the project root:  python bench/groups.py [--limit N] [--sweep]
The ingest stage runs twice in scratch projects (split_by id, then group), timed. Against the identities in the
file names (`Aaron_Guiel_0001.jpg` and `Dileep_13.jpg` name a person; `facial-expressions_2868582k.jpg` names
none and counts as a person of its own, so it adds no pair), over the kept images:
- the groups' pair precision and recall (a pair: two images in one group / of one person);
- identity leakage: test images whose person also has a train image, as the stage drew the splits, and its mean
  over 200 redraws of the split (another salt in the hash that draws each group's, or each id's, split).
Intervals are 95% bootstraps over people (recall, leakage) or groups (precision), 2,000 draws, seed 0.
A third run adds ingest.group_pattern (--pattern; the file names' person, as the names are read above).
--sweep also signs the kept images again (about 2 minutes on two cores) and prints the same for other
ingest.group_distance values, and what the near-duplicate thresholds of stages/lib/groups.py rest on.
"""

import argparse
import hashlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "facial_expressions"))
PERSON = re.compile(r"^(?P<person>[A-Za-z][A-Za-z.'-]*(?:_[A-Za-z.'-]+)*)_\d+\.jpe?g$", re.IGNORECASE)
DRAWS, SALTS = 2000, 200


def person_of(name: str) -> str:
    m = PERSON.match(name)
    return m.group("person") if m else f"unknown:{name}"


def run_ingest(folder, split_by, legend, group_pattern=""):
    """The kept rows of data/images after one ingest run, and (wall s, cpu s) of the run and its workers."""
    with open(os.path.join(ROOT, "params.yaml")) as f:
        params = yaml.safe_load(f)
    params["ingest"].update(source="labelled_folder", path=PHOTOS, split_by=split_by, group_pattern=group_pattern)
    if legend:
        params["ingest"]["csv"] = legend
    os.symlink(os.path.join(ROOT, "stages"), os.path.join(folder, "stages"))
    with open(os.path.join(folder, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    env = dict(os.environ, PYTHONPATH=folder)
    proc = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=folder, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"ingest failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    df = pd.read_parquet(os.path.join(folder, "data", "images"))
    df = df[df.kept].sort_values("id").reset_index(drop=True)
    df["person"] = [person_of(os.path.basename(k)) for k in df.source_key]
    return df, (wall, cpu)


def _ratio_ci(num, den, rng):
    """95% bootstrap interval of sum(num)/sum(den) over the units (people or groups) the arrays hold."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    draws = [num[i].sum() / max(den[i].sum(), 1) for i in (rng.integers(0, len(num), len(num)) for _ in range(DRAWS))]
    return np.percentile(draws, [2.5, 97.5])


def pair_scores(groups, people):
    """(precision, its interval, pairs in groups), (recall, its interval, pairs of one person)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"g": groups, "p": people})
    both = frame.groupby(["g", "p"]).size()
    same = (both * (both - 1) // 2).rename("tp")

    def pairs(n):
        return n * (n - 1) // 2

    by_group = pd.DataFrame({"tp": same.groupby(level=0).sum(), "n": pairs(frame.groupby("g").size())})
    by_person = pd.DataFrame({"tp": same.groupby(level=1).sum(), "n": pairs(frame.groupby("p").size())})
    out = []
    for table in (by_group, by_person):
        table = table[table.n > 0]
        out.append((table.tp.sum() / max(table.n.sum(), 1), _ratio_ci(table.tp, table.n, rng), int(table.n.sum())))
    return out


def leak_per_person(split, people):
    """Per person: (test images of a person who also has a train image, test images)."""
    frame = pd.DataFrame({"test": np.asarray(split) == "test", "p": people})
    per = frame.groupby("p").test.agg(["sum", "count"])
    straddles = (per["sum"] > 0) & (per["sum"] < per["count"])
    return np.where(straddles, per["sum"], 0), per["sum"].to_numpy()


def redrawn_leak(keys, people, test_fraction):
    """Leakage share over SALTS redraws of the split from `keys` (each row's group, or its id)."""
    shares = []
    for salt in range(SALTS):
        draw = {k: int(hashlib.sha256(f"{salt}:{k}".encode()).hexdigest()[:8], 16) / 16**8 for k in set(keys)}
        split = ["test" if draw[k] < test_fraction else "train" for k in keys]
        leaked, tests = leak_per_person(split, people)
        shares.append(leaked.sum() / max(tests.sum(), 1))
    return np.mean(shares), np.percentile(shares, [2.5, 97.5])


def report(name, df, keys, test_fraction, cost=None):
    rng = np.random.default_rng(0)
    leaked, tests = leak_per_person(df.split, df.person)
    lo, hi = _ratio_ci(leaked, tests, rng)
    mean, (rlo, rhi) = redrawn_leak(list(keys), df.person.tolist(), test_fraction)
    sizes = pd.Series(list(keys)).value_counts()
    print(
        f"\n{name}: {len(df)} kept images, {df.person.nunique()} people, {len(sizes)} groups (largest {sizes.iloc[0]})"
    )
    if cost:
        print(f"  ingest: {cost[0]:.0f} s wall, {cost[1]:.0f} s CPU")
    print(f"  test images: {tests.sum()} ({tests.sum() / len(df):.3f} of kept; test_fraction {test_fraction})")
    share = leaked.sum() / max(tests.sum(), 1)
    print(f"  leakage: {leaked.sum()} of {tests.sum()} test images = {share:.3f} [{lo:.3f}, {hi:.3f}]")
    print(f"  leakage over {SALTS} redraws of the split: mean {mean:.3f}, 95% of draws in [{rlo:.3f}, {rhi:.3f}]")
    straddling = sum(1 for _, s in df.groupby("person").split if s.nunique() > 1)
    print(f"  people with images in both train and test: {straddling} of {df.person.nunique()}")
    if len(sizes) < len(df):
        (p, plo_hi, pn), (r, rlo_hi, rn) = pair_scores(list(keys), df.person.tolist())
        print(f"  pair precision {p:.3f} [{plo_hi[0]:.3f}, {plo_hi[1]:.3f}] of {pn} pairs in one group")
        print(f"  pair recall    {r:.3f} [{rlo_hi[0]:.3f}, {rlo_hi[1]:.3f}] of {rn} pairs of one person")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="only the first N rows of legend.csv")
    ap.add_argument("--sweep", action="store_true", help="other group distances and the near-duplicate thresholds")
    ap.add_argument("--pattern", default=r"^(.+)_\d+\.jpe?g$", help="ingest.group_pattern of a third run ('' = none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as tmp:
        legend = None
        if args.limit:
            legend = os.path.join(tmp, "legend.csv")
            pd.read_csv(os.path.join(PHOTOS, "legend.csv")).head(args.limit).to_csv(legend, index=False)
        runs = {}
        for split_by in ("id", "group"):
            os.makedirs(os.path.join(tmp, split_by))
            runs[split_by] = run_ingest(os.path.join(tmp, split_by), split_by, legend)
        if args.pattern:
            os.makedirs(os.path.join(tmp, "pattern"))
            runs["pattern"] = run_ingest(os.path.join(tmp, "pattern"), "group", legend, args.pattern)
    with open(os.path.join(ROOT, "params.yaml")) as f:
        fraction = yaml.safe_load(f)["ingest"]["test_fraction"]
    (by_id, id_cost), (by_group, group_cost) = runs["id"], runs["group"]
    report("split_by: id", by_id, by_id.id, fraction, id_cost)
    report("split_by: group", by_group, by_group.group, fraction, group_cost)
    if args.pattern:
        by_name, name_cost = runs["pattern"]
        report(f"split_by: group, group_pattern {args.pattern!r}", by_name, by_name.group, fraction, name_cost)
    if args.sweep:
        from bench.groups_sweep import sweep

        sweep(by_group, fraction, report)


if __name__ == "__main__":
    main()
