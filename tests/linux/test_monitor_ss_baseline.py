"""The ss fallback started against a connection that is already open counts only what the connection
carries from then on, as eBPF does (it would otherwise count the connection's whole history as this
round's upload, and raise a false exfiltration). Needs ``ss`` (iproute2); no root."""

from __future__ import annotations

import shutil
import socket

import pytest

from fedra.linux._monitor import Monitor
from fedra.linux._monitor_types import MonitorRules

BEFORE, AFTER = 400_000, 150_000


def _drain(conn: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        got += len(conn.recv(1 << 16))


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (apt-get install iproute2)")
def test_an_open_connection_is_counted_from_the_monitors_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"x" * BEFORE)  # history: before the monitor
                _drain(conn, BEFORE)
                mon = Monitor(MonitorRules(ports=(port,), expected_update_bytes=AFTER, k=1.5, overhead_bytes=0),
                              backend="ss", interval=0.2).start()
                try:
                    c.sendall(b"y" * AFTER)
                    _drain(conn, AFTER)
                    assert mon.flush()
                    local = "{}:{}".format(*c.getsockname())
                    assert mon.connection(local, port)["upload"] == AFTER
                finally:
                    mon.stop()
    assert [e.kind for e in mon.events] == []  # 150 kB against a 1.5 x 150 kB limit: no exfiltration
