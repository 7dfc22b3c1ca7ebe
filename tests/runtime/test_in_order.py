"""The driver folds replies in task order, holding early ones, but never more than its window."""

from __future__ import annotations

import numpy as np
import pytest

from fedra.runtime._driver import _InOrder


class Recorder:
    def __init__(self) -> None:
        self.weights: list[float] = []

    @property
    def count(self) -> int:
        return len(self.weights)

    def add(self, arrays: object, weight: float) -> None:
        self.weights.append(weight)


def settle_all(order: _InOrder, indices: list[int], *, failed: frozenset[int] = frozenset()) -> int:
    """Settle ``indices`` in that order, then drain; the most replies held at once."""
    most = 0
    for i in indices:
        order.settle(i, None if i in failed else ({"w": np.zeros(1, np.float32)}, float(i)))
        most = max(most, len(order.ready))
    order.drain()
    return most


def test_without_a_window_replies_fold_in_task_order_whatever_their_arrival() -> None:
    rec = Recorder()
    order = _InOrder(rec, 6)
    most = settle_all(order, [5, 3, 4, 1, 2, 0])
    assert order.folded == [0, 1, 2, 3, 4, 5] and rec.weights == [0, 1, 2, 3, 4, 5]
    assert most == 5 and order.ahead == 0


def test_a_window_bounds_the_early_replies_held_and_the_late_one_folds_when_it_comes() -> None:
    rec = Recorder()
    order = _InOrder(rec, 6, window=2)
    most = settle_all(order, [1, 2, 3, 4, 0, 5])
    assert most == 2
    # 1 and 2 wait for 0; 3 comes: 1 is folded ahead of 0, then 2 when 4 comes; 0 folds when it comes,
    # and with it everything it held back
    assert order.folded == [1, 2, 0, 3, 4, 5]
    assert order.ahead == 2


def test_a_window_folds_nothing_early_while_replies_come_in_task_order() -> None:
    rec = Recorder()
    order = _InOrder(rec, 5, window=0)
    settle_all(order, [0, 1, 2, 3, 4])
    assert order.folded == [0, 1, 2, 3, 4] and order.ahead == 0


@pytest.mark.parametrize("window", [None, 0, 1, 3])
def test_a_task_that_never_answers_and_a_failed_one_lose_no_other_update(window: int | None) -> None:
    rec = Recorder()
    order = _InOrder(rec, 8, window=window)
    settle_all(order, [7, 6, 5, 4, 3, 2, 1], failed=frozenset({4}))  # task 0 never answers; 4 failed
    assert sorted(order.folded) == [1, 2, 3, 5, 6, 7]
    assert sorted(rec.weights) == [1, 2, 3, 5, 6, 7]
