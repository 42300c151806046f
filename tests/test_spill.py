"""The spill file: records read back by key in any order, nothing but offsets kept in memory."""

import numpy as np
import pytest

from stages.lib.spill import SpillFile


def test_records_come_back_by_key_in_any_order():
    rng = np.random.default_rng(0)
    records = {f"id{k}": ([k, k + 1], rng.bytes(int(rng.integers(0, 5000))), None) for k in range(50)}
    with SpillFile() as spill:
        for key, value in records.items():
            spill.put(key, value)
        assert len(spill) == 50 and "id7" in spill and "id50" not in spill
        for key in rng.permutation(list(records)):
            assert spill.get(key) == records[key]
        with pytest.raises(KeyError, match="id3"):
            spill.put("id3", b"again")  # a key is written once: a second row of one id is a bug upstream
        assert spill.get("id3") == records["id3"]
