"""Hypothesis strategies shared by the aggregation tests: lists of matching client models."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def _elements(dtype: np.dtype[Any], bound: float) -> st.SearchStrategy[Any]:
    if dtype.kind == "f":
        return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                         width=8 * dtype.itemsize)
    if dtype.kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.integers(max(int(info.min), -1000), min(int(info.max), 1000))


@st.composite
def models(
    draw: st.DrawFn,
    *,
    min_n: int = 1,
    max_n: int = 6,
    dtypes: tuple[str, ...] = ("float64",),
    max_arrays: int = 2,
    bound: float = 1e3,
) -> list[dict[str, np.ndarray]]:
    """``n`` client models with the same names, shapes and dtypes (1 to ``max_arrays`` arrays each)."""
    n = draw(st.integers(min_n, max_n))
    count = draw(st.integers(1, max_arrays))
    specs = []
    for k in range(count):
        dtype = np.dtype(draw(st.sampled_from(dtypes)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=5))
        specs.append((f"a{k}", dtype, shape))
    return [
        {
            name: draw(hnp.arrays(dtype, shape, elements=_elements(dtype, bound)))
            for name, dtype, shape in specs
        }
        for _ in range(n)
    ]


def weights_for(n: int) -> st.SearchStrategy[list[float]]:
    """``n`` weights, each 0 or in [1e-6, 1000], at least one of them >= 1."""
    weight = st.one_of(st.just(0.0), st.floats(1e-6, 1000))
    return st.lists(weight, min_size=n, max_size=n).filter(lambda ws: max(ws) >= 1)
