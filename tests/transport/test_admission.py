"""The server's admission of reply buffers: lowest waiting task first, the head of line always, and a
change wakes only the replies it may admit."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

pytest.importorskip("grpc")

from fedra.transport.grpc._server import _Admission


class Waiters:
    """Threads waiting in ``admission.acquire``, each for a task index; counts each one's wake-ups."""

    def __init__(self, admission: _Admission) -> None:
        self.admission = admission
        self.checks: Counter[int] = Counter()  # still_wanted() calls: one per pass of the waiting loop
        self.results: dict[int, bool] = {}
        self.wanted = True
        self._done: dict[int, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def start(self, index: int) -> None:
        def still_wanted() -> bool:
            self.checks[index] += 1
            return self.wanted

        def run() -> None:
            self.results[index] = self.admission.acquire(index, still_wanted=still_wanted)
            self._done[index].set()

        self._done[index] = threading.Event()
        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()
        deadline = time.monotonic() + 10
        while self.checks[index] == 0 and time.monotonic() < deadline:  # registered, about to wait
            time.sleep(0.005)
        assert self.checks[index] == 1

    def done(self, index: int, timeout: float = 10) -> bool:
        return self._done[index].wait(timeout)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def admission(monkeypatch: pytest.MonkeyPatch) -> _Admission:
    # no timed re-checks during the test: a waiter wakes only when it is woken
    monkeypatch.setattr(_Admission, "POLL", 60.0)
    return _Admission(1)


def test_a_freed_slot_goes_to_the_lowest_waiting_task_and_wakes_no_other(admission: _Admission) -> None:
    waiters = Waiters(admission)
    assert admission.acquire(0, still_wanted=lambda: True)  # the head of line: the one slot
    for index in (5, 3, 4, 2):
        waiters.start(index)
    admission.release(0)
    assert waiters.done(2)
    assert waiters.results[2] is True
    time.sleep(0.3)  # time for any other waiter that was woken to look again
    assert waiters.checks == {2: 2, 3: 1, 4: 1, 5: 1}, "a freed slot woke replies it could not admit"
    assert not any(waiters.done(i, timeout=0) for i in (3, 4, 5))
    waiters.wanted = False
    admission.advance(-1)
    waiters.join()


def test_the_head_of_line_is_admitted_past_full_slots_and_wakes_no_other(admission: _Admission) -> None:
    waiters = Waiters(admission)
    assert admission.acquire(0, still_wanted=lambda: True)  # the one slot, held throughout
    for index in (3, 4, 5):
        waiters.start(index)
    admission.advance(4)  # tasks 0..3 answered or judged: 4 is the head of line now
    assert waiters.done(4)
    assert waiters.results[4] is True
    time.sleep(0.3)
    assert waiters.checks == {3: 1, 4: 2, 5: 1}
    assert admission.peak == 2  # the slot and the head of line
    waiters.wanted = False
    admission.advance(-1)
    waiters.join()


def test_the_end_of_a_round_wakes_every_waiting_reply_to_give_up(admission: _Admission) -> None:
    waiters = Waiters(admission)
    assert admission.acquire(0, still_wanted=lambda: True)
    for index in (1, 2, 3):
        waiters.start(index)
    waiters.wanted = False  # the round is over: no reply is wanted any more
    admission.advance(-1)
    assert all(waiters.done(i) for i in (1, 2, 3))
    assert waiters.results == {1: False, 2: False, 3: False}
    admission.release(0)
    assert admission.acquire(7, still_wanted=lambda: True)  # the slot is free again, nobody waits


def test_slots_are_handed_on_one_by_one_in_task_order(admission: _Admission) -> None:
    waiters = Waiters(admission)
    admission.slots = 2
    assert admission.acquire(0, still_wanted=lambda: True)
    assert admission.acquire(1, still_wanted=lambda: True)
    for index in (9, 7, 8, 6):
        waiters.start(index)
    order: list[int] = []
    for held in (0, 1, 6, 7):  # each release frees the slot of the oldest buffer
        admission.release(held)
        deadline = time.monotonic() + 10
        while len(waiters.results) == len(order) and time.monotonic() < deadline:
            time.sleep(0.005)
        (new,) = set(waiters.results) - set(order)
        order.append(new)
    assert order == [6, 7, 8, 9]
    assert all(waiters.results.values())
    waiters.join()


def test_when_the_driver_holds_every_live_buffer_the_lowest_waiting_reply_is_admitted(
        admission: _Admission) -> None:
    """The driver holds the one slot's reply for an earlier task whose client never answers: only a new
    reply can move it on, so the lowest waiting one is admitted past the full slot; no other."""
    waiters = Waiters(admission)
    admission.advance(0)  # task 0's client died after its download: 0 stays the head of line
    assert admission.acquire(1, still_wanted=lambda: True, key="r1.1")
    for index in (3, 2):
        waiters.start(index)
    time.sleep(0.2)
    assert not waiters.done(2, timeout=0)  # reply 1 is still being received: the slot is in use
    admission.judged("r1.1")  # received and judged; the driver keeps it, waiting for task 0
    assert waiters.done(2)
    assert waiters.results[2] is True
    time.sleep(0.3)
    assert not waiters.done(3, timeout=0), "admitted while reply 2 was still to be judged"
    assert admission.peak == 2
    admission.judged(2)  # its default key is its index
    assert waiters.done(3)
    waiters.wanted = False
    admission.advance(-1)
    waiters.join()


@pytest.mark.parametrize(("replies", "window", "expected"), [
    (8, None, 3), (3, None, 1), (1, None, 0), (8, 0, 0), (8, 7, 7)])
def test_the_reorder_window_leaves_reply_slots_to_receive_in(replies: int, window: int | None,
                                                              expected: int) -> None:
    from fedra.transport.grpc import GrpcTransport

    server = GrpcTransport("127.0.0.1:0", max_replies=replies, reorder_window=window)
    try:
        assert server.reorder_window == expected
    finally:
        server.close()


@pytest.mark.parametrize("window", [-1, 8, 9])
def test_a_reorder_window_that_would_hold_every_slot_is_refused(window: int) -> None:
    from fedra.errors import ConfigError
    from fedra.transport.grpc import GrpcTransport

    with pytest.raises(ConfigError, match=r"reorder_window: expected 0 to max_replies - 1 = 7, got"):
        GrpcTransport("127.0.0.1:0", max_replies=8, reorder_window=window)


def test_a_stalled_reply_is_cancelled_only_when_another_waits_and_only_if_it_brings_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Admission, "POLL", 0.02)
    admission = _Admission(1, stall=0.2)
    cancelled: list[str] = []

    def cancel(key: str):  # type: ignore[no-untyped-def]
        def stop() -> None:  # as gRPC does: the stream fails, and its buffer goes
            cancelled.append(key)
            admission.release(key)
        return stop

    # a reply that keeps bringing chunks is never cancelled, however long another waits
    assert admission.acquire(0, still_wanted=lambda: True, key="steady", cancel=cancel("steady"))
    done = threading.Event()

    def steady() -> None:
        while not done.is_set():
            admission.progress("steady")
            time.sleep(0.02)

    feeder = threading.Thread(target=steady)
    feeder.start()
    give_up = time.monotonic() + 0.8  # four times the stall
    assert not admission.acquire(1, still_wanted=lambda: time.monotonic() < give_up)
    done.set()
    feeder.join(5)
    assert cancelled == [] and admission.stalled == 0
    admission.received("steady")
    admission.release("steady")

    # one that stops bringing chunks: left alone while nobody waits...
    assert admission.acquire(0, still_wanted=lambda: True, key="stuck", cancel=cancel("stuck"))
    time.sleep(0.4)
    assert cancelled == []
    # ...and cancelled once another reply waits for its slot, which the waiting reply then gets
    t0 = time.monotonic()
    assert admission.acquire(1, still_wanted=lambda: True, key="next")
    assert cancelled == ["stuck"] and admission.stalled == 1
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_reply_stall_that_is_not_positive_is_refused(bad: float) -> None:
    from fedra.errors import ConfigError
    from fedra.transport.grpc import GrpcTransport

    with pytest.raises(ConfigError, match="reply_stall: expected a positive number of seconds"):
        GrpcTransport("127.0.0.1:0", reply_stall=bad)
