"""A fresh clone's view of the project in a new folder, for runs that must not touch the checkout (the end-to-end
test, bench/evaluate_real.py). Imports nothing from the tests' conftest, whose thread settings a bench run must not
inherit."""

import shutil
import subprocess
from pathlib import Path


def copy_project(root, dest):
    """Copy `root`'s tracked and untracked-but-not-ignored files to `dest`, committed there in a new git repo."""
    root, dest = Path(root), Path(dest)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in files:
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=copy", "-c", "user.email=copy@localhost", "commit", "-qm", "copy"],
    ):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
