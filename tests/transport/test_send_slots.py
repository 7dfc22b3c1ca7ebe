"""The server's send slots: at most ``slots`` downloads at once, each holding its slot for the whole
download while it keeps up, and a stalled download's slot handed to the next client (a client that stops
reading must not keep every other client from its task)."""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip("grpc")

from fedra.errors import ConfigError
from fedra.transport import Task, TaskBatch
from fedra.transport.grpc import CHANNEL_OPTIONS, GrpcConnector, GrpcTransport
from fedra.transport.grpc import fedra_pb2 as pb
from fedra.transport.grpc._server import METHODS, _SendSlots


def test_no_more_than_the_slots_are_given_while_their_downloads_keep_up() -> None:
    slots = _SendSlots(2, stall=0.2)
    a, b = slots.acquire("a", timeout=0), slots.acquire("b", timeout=0)
    assert a is not None and b is not None
    stop = threading.Event()

    def keep_up() -> None:  # chunk after chunk, each taken at once: never stalled
        while not stop.is_set():
            for sender in (a, b):
                slots.handing(sender)
                slots.taken(sender)
            time.sleep(0.01)

    runner = threading.Thread(target=keep_up)
    runner.start()
    try:
        assert slots.acquire("c", timeout=1.0) is None  # five times the stall: nothing reclaimed
    finally:
        stop.set()
        runner.join(5)
    assert slots.stalled == 0
    slots.release(a)
    assert slots.acquire("c", timeout=0) is not None


def test_a_freed_slot_wakes_a_waiting_download() -> None:
    slots = _SendSlots(1, stall=math.inf)
    holder = slots.acquire("a", timeout=0)
    assert holder is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire("b", timeout=10)))
    waiter.start()
    time.sleep(0.1)
    assert not got
    slots.release(holder)
    waiter.join(5)
    assert got and got[0] is not None


def test_a_stalled_download_gives_its_slot_to_the_next_client_and_its_release_frees_nothing() -> None:
    slots = _SendSlots(1, stall=0.2)
    stuck = slots.acquire("stuck", timeout=0)
    assert stuck is not None
    slots.handing(stuck)  # gRPC never takes this chunk
    t0 = time.monotonic()
    nxt = slots.acquire("next", timeout=10)
    waited = time.monotonic() - t0
    assert nxt is not None and slots.stalled == 1
    assert 0.15 <= waited < 5  # not before the stall, and not at the end of the timeout
    slots.taken(stuck)  # the stalled download goes on outside the count...
    slots.release(stuck)  # ...and its end frees no slot: "next" still holds the only one
    assert slots.acquire("third", timeout=0.1) is None
    slots.release(nxt)
    assert slots.acquire("third", timeout=0) is not None


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_a_send_stall_that_is_not_positive_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="send_stall: expected a positive number of seconds"):
        GrpcTransport("127.0.0.1:0", send_stall=bad)


def test_a_client_that_stops_reading_its_task_does_not_keep_the_others_from_theirs() -> None:
    """One send slot, taken by a client that reads its task's header and no more: the other client must
    still be sent its task in the same round, and its reply must count."""
    server = GrpcTransport("127.0.0.1:0", max_sending=1, send_stall=0.3)
    good = GrpcConnector(f"127.0.0.1:{server.port}", client_id="good")
    # a fixed receive window (no BDP probing), so that gRPC stops taking the stuck client's payload soon
    raw = grpc_channel(server.port)
    pull = raw.unary_stream(METHODS["Pull"], request_serializer=pb.PullRequest.SerializeToString)
    try:
        stream = pull(pb.PullRequest(client_id="stuck", wait_ms=10_000), timeout=60)
        assert good.pull(0.05) is None  # both connected
        deadline = time.monotonic() + 10
        while len(server.clients()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        batch = TaskBatch("train", 1, bytes(8 << 20), (Task("r1.0", "stuck", "n0"), Task("r1.1", "good", "n1")))
        replies: list[tuple[str, str, str | None]] = []

        def run_round() -> None:
            for reply in server.exchange(batch, timeout=30):
                replies.append((reply.task_id, reply.client_id, reply.error))
                if reply.ack is not None:
                    reply.ack(None)

        exchange = threading.Thread(target=run_round)
        exchange.start()
        next(stream)  # the stuck client has its slot, and its header; it reads nothing more
        pulled = good.pull(10)
        assert pulled is not None, "the other client was not sent its task: the stuck one kept the slot"
        assert pulled.payload.nbytes == 8 << 20 and not any(pulled.payload)
        assert good.push(pulled.task, b"ok").received
        assert server.stalled_sends == 1
        stream.cancel()  # the stuck client gives up: a dropout, and the round is settled
        exchange.join(20)
        assert not exchange.is_alive()
        assert replies[0] == ("r1.1", "good", None)
        assert [(t, c) for t, c, _ in replies[1:]] == [("r1.0", "stuck")] and replies[1][2]
    finally:
        good.close()
        raw.close()
        server.close()


def grpc_channel(port: int):  # type: ignore[no-untyped-def]
    import grpc

    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[*CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0)])
