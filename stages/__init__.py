"""DVC stages of the face-curation pipeline: one module per stage, run as `python -m stages.<name>`."""

import os

# pyarrow's allocator (mimalloc) waits 10 ms before it hands freed pages back to the OS, and a stage that streams
# row groups back to back never waits that long: the pages of every batch it has let go stay resident. Handing them
# back at once took the demo's peak RSS in extract_rois from 359-386 to 280-286 MiB, and in evaluate@mouth from
# 1,076-1,111 to 975-999 MiB, for the same CPU time (bench/README.md, "Streaming reads"). Set before anything imports
# pyarrow; a value the user set is kept.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
