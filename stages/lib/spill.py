"""A spill file: records kept on a temporary file and read back by key, in any order.

A streamed stage meets some rows in one table's order and needs them in another's: evaluate reads the ROI manifest
once, but pastes each test face's crop when its photo streams past, and the oracle pastes real target crops in a
seeded random order. Holding those rows would grow memory with the test set; here only an offset and a length per
key stay in memory.

    from stages.lib.spill import SpillFile
    with SpillFile() as spill:
        spill.put("id1", (bbox, crop_png, alpha_png))   # any picklable value
        bbox, crop_png, alpha_png = spill.get("id1")
"""

import pickle
import tempfile


class SpillFile:
    """put() appends a record and get() seeks back to it; the file is deleted on close (or when the process ends)."""

    def __init__(self):
        self._file = tempfile.TemporaryFile(prefix="spill-")
        self._index = {}
        self._end = 0

    def put(self, key, value):
        if key in self._index:
            raise KeyError(f"{key!r} is already in the spill file")
        record = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.seek(self._end)
        self._file.write(record)
        self._index[key] = (self._end, len(record))
        self._end += len(record)

    def get(self, key):
        offset, size = self._index[key]
        self._file.seek(offset)
        # Only this object's own put() wrote the file, so unpickling reads back our own records.
        return pickle.loads(self._file.read(size))

    def __contains__(self, key) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
