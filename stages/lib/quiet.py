"""Silence C++ libraries that write straight to file descriptor 2 (MediaPipe, TFLite, absl, Ray).

Kept apart from the FaceMesh backend so that a process which only needs the quiet block (the parse stage's own
process when worker processes or Ray actors hold the parsers) does not import MediaPipe for it: that import is
~0.8 s of CPU before the first worker could start.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block; yields a text stream to the real stderr.

    TFLite's XNNPACK and absl's "Feedback manager" lines are written by C++ straight to fd 2, below Python's reach,
    and some come from MediaPipe's worker threads after `process()` has returned, so silencing single calls is not
    enough: the stage runs its whole FaceMesh loop inside this block and sends tqdm to the yielded stream.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        os.dup2(devnull, 2)
        yield real
    finally:
        real.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        real.close()
