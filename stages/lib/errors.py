"""One-line failures for users: bad params, missing files, missing weights, and what the OS refuses.

A stage's `main()` is wrapped by `run_stage`, which turns a `StageError` into one line on stderr and exit status 2,
and an OS failure (disk full, read-only or unwritable folder, too many open files, out of memory) into one line that
names the cause and the path, exit status 1. Outputs are written atomically (stages/lib/tables.py), so the previous
ones are still there after either.
"""

import os
import sys


class StageError(Exception):
    """A user-facing error; its message is the whole story, printed as one line."""


def run_stage(main, *args, skip_teardown=True):
    """Run `main(*args)` as a stage's process. A stage that returned ends at once (stdout and stderr flushed, every
    output already written atomically and closed, worker pools and Ray shut down by the code that started them)
    instead of tearing the interpreter down: torch's libraries page in ~125 MB while they unload (a bare
    `import torch` process peaks at 635 MB against 510 MB before exit; that was the whole of train_curator's peak RSS
    above 1 GB at 20k faces), and the teardown takes ~0.4 s of every stage. `skip_teardown=False` for a caller that
    runs a stage's main in its own process and goes on (tests)."""
    try:
        main(*args)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # ENOSPC, EACCES, EROFS, EMFILE, ... from Python, pyarrow or torch
        print(f"error: {os_error_line(err)}; the previous outputs are unchanged", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print("error: out of memory; the previous outputs are unchanged", file=sys.stderr)
        sys.exit(1)
    if skip_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def os_error_line(err: OSError) -> str:
    """The cause and the path of an OS failure, on one line."""
    cause = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    path = f": {err.filename}" if err.filename else ""
    return f"{cause}{path}"
