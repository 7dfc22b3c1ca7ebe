"""The round aggregate: how long the mean holds updates before folding them."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from fedra.errors import ConfigError
from fedra.strategy import Aggregator


def test_the_mean_holds_updates_for_batching_only_up_to_fold_bytes() -> None:
    """Updates are folded (and released) once fold_bytes of them are pending, whatever fold_batch says."""
    round_ = Aggregator(fold_batch=16, fold_bytes=1000).start({"w": np.zeros(100, np.float32)})
    refs = []
    for i in range(5):  # 400 bytes each: the third one reaches 1,200 >= 1,000 bytes and triggers a fold
        update = {"w": np.full(100, float(i), np.float32)}
        refs.append(weakref.ref(update["w"]))
        round_.add(update, 1.0)
        del update
    gc.collect()
    assert [r() is None for r in refs] == [True, True, True, False, False]
    assert np.allclose(round_.finish()["w"], 2.0)
    with pytest.raises(ConfigError, match="fold_bytes"):
        Aggregator(fold_bytes=-1)
