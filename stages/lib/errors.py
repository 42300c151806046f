"""One-line failures for users: bad params, missing files, missing weights.

A stage's `main()` is wrapped by `run_stage`, which turns a `StageError` into one line on stderr and exit status 2,
so that bad input never ends in a traceback.
"""
import sys


class StageError(Exception):
    """A user-facing error; its message is the whole story, printed as one line."""


def run_stage(main, *args):
    try:
        main(*args)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
