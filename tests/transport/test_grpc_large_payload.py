"""A payload larger than gRPC's 2 GiB message cap crosses the transport intact, in checked chunks."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

pytest.importorskip("grpc")

from fedra.transport import Task, TaskBatch
from fedra.transport.grpc import GrpcConnector, GrpcTransport

SIZE = (2 << 30) + (3 << 20) + 5  # 2 GiB + 3 MiB + 5 bytes: over the cap, and not a whole number of chunks


@pytest.mark.slow
def test_a_payload_over_2_gib_is_pulled_intact() -> None:
    payload = bytearray(SIZE)
    view = np.frombuffer(payload, dtype=np.uint8)
    view[:: 4096] = np.arange(len(view[:: 4096]), dtype=np.uint64).astype(np.uint8)  # not all zeros
    view[-5:] = [1, 2, 3, 4, 5]
    digest = hashlib.sha256(payload).hexdigest()
    server = GrpcTransport("127.0.0.1:0", max_payload_bytes=SIZE)
    conn = GrpcConnector(f"127.0.0.1:{server.port}", client_id="big", max_payload_bytes=SIZE)
    try:
        assert conn.pull(0.05) is None
        batch = TaskBatch("train", 1, payload, (Task("r1.0", "big", "n"),))
        got: list[object] = []
        th = threading.Thread(target=lambda: got.extend(server.exchange(batch, timeout=120)))
        th.start()
        pulled = conn.pull(120)
        assert pulled is not None
        assert len(pulled.payload) == SIZE
        assert hashlib.sha256(pulled.payload).hexdigest() == digest
        del pulled
        conn.push(Task("r1.0", "big", "n"), error="done")  # ends the exchange
        th.join(30)
        assert len(got) == 1
    finally:
        conn.close()
        server.close()
