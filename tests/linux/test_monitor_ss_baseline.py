"""A monitor started against a connection that is already open counts only what the connection carries
from then on, with either backend. The ss fallback would otherwise count the connection's whole history as
this round's upload (and raise a false exfiltration); bpftrace, which describes a socket at its first call
rather than when it connects, must still see a socket it never saw connect. Needs ``ss`` (iproute2) for the
fallback, root and bpftrace for eBPF."""

from __future__ import annotations

import shutil
import socket

import pytest

from fedra.linux._bpf import bpf_unavailable_reason
from fedra.linux._monitor import Monitor
from fedra.linux._monitor_types import MonitorRules

BEFORE, AFTER = 400_000, 150_000


def _drain(conn: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        got += len(conn.recv(1 << 16))


@pytest.fixture(params=["ss", "bpftrace"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ss" and shutil.which("ss") is None:
        pytest.skip("needs ss (apt-get install iproute2)")
    if request.param == "bpftrace" and (why := bpf_unavailable_reason()) is not None:
        pytest.skip(why)
    return str(request.param)


def test_an_open_connection_is_counted_from_the_monitors_start(backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"x" * BEFORE)  # history: before the monitor
                _drain(conn, BEFORE)
                mon = Monitor(MonitorRules(ports=(port,), expected_update_bytes=AFTER, k=1.5, overhead_bytes=0),
                              backend=backend, interval=0.2).start()  # type: ignore[arg-type]
                try:
                    c.sendall(b"y" * AFTER)
                    _drain(conn, AFTER)
                    assert mon.flush()
                    local = "{}:{}".format(*c.getsockname())
                    assert mon.connection(local, port)["upload"] == AFTER
                    conn.sendall(b"z" * AFTER)  # and the other way, on the socket accepted before the start
                    _drain(c, AFTER)
                    assert mon.flush()
                    assert mon.connection(local, port)["download"] == AFTER
                finally:
                    mon.stop()
    assert [e.kind for e in mon.events] == []  # 150 kB against a 1.5 x 150 kB limit: no exfiltration
