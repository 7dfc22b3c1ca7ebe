"""The numpy adapter: a model that is a dict of arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedra.errors import SchemaMismatch
from fedra.frameworks.numpy import ADAPTER, ArrayData


def test_set_and_get_copy_and_check_the_schema() -> None:
    model = {"w": np.zeros((2, 2), np.float32)}
    new = {"w": np.ones((2, 2), np.float32)}
    ADAPTER.set_arrays(model, new)
    new["w"][0, 0] = 5
    assert model["w"][0, 0] == 1.0
    got = ADAPTER.get_arrays(model)
    got["w"][:] = 9
    assert model["w"][0, 0] == 1.0
    with pytest.raises(SchemaMismatch, match=r"expected float32\[2, 2\], got float64\[2, 2\]"):
        ADAPTER.set_arrays(model, {"w": np.zeros((2, 2))})
    with pytest.raises(SchemaMismatch, match="expected arrays"):
        ADAPTER.set_arrays(model, {"v": np.zeros((2, 2), np.float32)})


def test_array_data_batches() -> None:
    d = ArrayData(np.arange(10).reshape(5, 2), np.arange(5))
    assert len(d) == 5
    assert [b[1].tolist() for b in d.batches(2)] == [[0, 1], [2, 3], [4]]
    shuffled = [b[1].tolist() for b in d.batches(2, rng=np.random.default_rng(0))]
    assert sorted(x for part in shuffled for x in part) == [0, 1, 2, 3, 4]
    assert shuffled == [b[1].tolist() for b in d.batches(2, rng=np.random.default_rng(0))]
