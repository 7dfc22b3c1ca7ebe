"""Addresses are checked before grpc sees them: grpc reads a port modulo 65536 and a missing one as 443."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("grpc")

from fedra.errors import ConfigError, TransportError
from fedra.transport.grpc import GrpcConnector, GrpcTransport, check_address


@pytest.mark.parametrize("value", ["127.0.0.1:7788", "0.0.0.0:0", "localhost:65535", "[::1]:7788",
                                   "agg.example.org:1"])
def test_good_addresses_to_listen_on_pass_unchanged(value: str) -> None:
    assert check_address(value, what="bind", listen=True) == value


@pytest.mark.parametrize(("value", "problem"), [
    ("127.0.0.1:99999", "the port 99999 is out of range"),   # grpc: port 34463
    ("127.0.0.1:65536", "the port 65536 is out of range"),   # grpc: port 0, any free one
    ("127.0.0.1", "there is no port"),                       # grpc: port 443
    ("127.0.0.1:-1", "the port '-1' is not a decimal number"),  # grpc: port 65535
    ("127.0.0.1:", "the port '' is not a decimal number"),
    ("127.0.0.1:7788 ", "whitespace"),
    ("127.0.0.1:٣", "the port '٣' is not a decimal number"),  # a digit to str.isdigit, not to grpc
    (":7788", "the host is empty"),
    ("[]:7788", "the host is empty"),
    ("::1:7788", "an IPv6 host must be in brackets"),
    ("[::1:7788", "an IPv6 host must be in brackets"),
    ("a]:7788", "brackets do not enclose the whole host"),
])
def test_bad_addresses_are_refused_with_the_problem_and_an_example(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_address(value, what="--bind", listen=True)
    text = str(info.value)
    assert text.startswith("--bind: expected HOST:PORT with a port from 0 to 65535")
    assert repr(value) in text and problem in text and "for example 0.0.0.0:7788" in text


@pytest.mark.parametrize("value", ["unix:/run/fedra.sock", "dns:///agg.example.org:7788", "ipv4:10.0.0.5:7788",
                                   "unix-abstract:fedra"])
def test_grpc_target_forms_other_than_host_port_are_refused(value: str) -> None:
    # a Unix socket's path would be the name the server's certificate is checked against
    with pytest.raises(ConfigError, match=r"--server: expected HOST:PORT .*target URIs are not accepted"
                                          r".*for example agg\.example\.org:7788"):
        check_address(value, what="--server", listen=False)


def test_port_zero_is_only_for_listening() -> None:
    assert check_address("127.0.0.1:0", what="bind", listen=True)
    with pytest.raises(ConfigError, match=r"--server: expected HOST:PORT with a port from 1 to 65535.*"
                                          r"the port 0 is out of range.*agg\.example\.org:7788"):
        check_address("127.0.0.1:0", what="--server", listen=False)


@pytest.mark.parametrize("bind", ["127.0.0.1:99999", "127.0.0.1", "127.0.0.1:-1"])
def test_the_server_refuses_a_port_grpc_would_wrap(bind: str) -> None:
    with pytest.raises(ConfigError, match="bind: expected HOST:PORT"):
        GrpcTransport(bind)


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "127.0.0.1", "127.0.0.1:0"])
def test_the_client_refuses_a_target_grpc_would_dial_elsewhere(target: str) -> None:
    with pytest.raises(ConfigError, match="target: expected HOST:PORT"):
        GrpcConnector(target, client_id="c")


def test_a_bind_that_fails_is_a_transport_error_with_the_reason() -> None:
    with socket.socket() as held:  # a port another socket holds, without SO_REUSEPORT
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(TransportError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*pick another port"):
            GrpcTransport(f"127.0.0.1:{port}")
    with pytest.raises(TransportError, match=r"cannot listen on host\.invalid:7788: .*check the host name"):
        GrpcTransport("host.invalid:7788")


def test_the_server_listens_on_the_port_it_was_given() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t = GrpcTransport(f"127.0.0.1:{port}")
    try:
        assert t.port == port
    finally:
        t.close()
