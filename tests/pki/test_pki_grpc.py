"""One real mutual-TLS gRPC call on 127.0.0.1 with the certificates fedra issues (skipped without grpcio).

This checks what unit tests cannot: that gRPC's TLS stack (BoringSSL) accepts fedra's ECDSA P-256
certificates and extensions, requires the client's, and hands the server the client certificate that
:meth:`fedra.pki.Authority.check_peer` turns into a name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedra.pki import Authority, PeerRejected, init_ca, issue, read_pair, revoke

grpc: Any = pytest.importorskip("grpc", reason="grpcio is not installed (fedra's gRPC transport needs it)")

METHOD = "/fedra.test.Echo/Who"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    from concurrent import futures

    root = tmp_path / "federation"
    init_ca(root)
    issue(root, "server", "srv", sans=["localhost", "127.0.0.1"])
    issue(root, "client", "site-01")
    issue(root, "client", "site-02")
    authority = Authority(root)

    def who(request: bytes, context: Any) -> bytes:
        pem = context.auth_context()["x509_pem_cert"][0]
        try:
            return authority.check_peer(pem).encode()
        except PeerRejected as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{exc.reason}: {exc}")
            raise  # abort raises; this line is for the type checker

    pair = read_pair(root, "srv")
    credentials = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)], root_certificates=pair.ca_pem,
                                              require_client_auth=True)
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "fedra.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})])
    port = srv.add_secure_port("127.0.0.1:0", credentials)
    srv.start()
    try:
        yield root, port
    finally:
        srv.stop(grace=None).wait()


def call(root: Path, port: int, client: str | None, *, host: str = "127.0.0.1") -> bytes:
    ca = (root / "ca" / "ca.crt").read_bytes()
    if client is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        pair = read_pair(root, client)
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=pair.key_pem,
                                                   certificate_chain=pair.cert_pem)
    options = [("grpc.ssl_target_name_override", host)] if host != "127.0.0.1" else []
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        result: bytes = channel.unary_unary(METHOD)(b"", timeout=10)
        return result


def test_mutual_tls_call_names_the_client(server: tuple[Path, int]) -> None:
    root, port = server
    assert call(root, port, "site-01") == b"site-01"
    assert call(root, port, "site-02", host="localhost") == b"site-02"


def test_no_client_certificate_is_refused_by_tls(server: tuple[Path, int]) -> None:
    root, port = server
    with pytest.raises(grpc.RpcError) as info:
        call(root, port, None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_revocation_applies_to_the_running_server(server: tuple[Path, int]) -> None:
    root, port = server
    assert call(root, port, "site-01") == b"site-01"
    revoke(root, "site-01")
    with pytest.raises(grpc.RpcError) as info:
        call(root, port, "site-01")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in info.value.details()
    assert call(root, port, "site-02") == b"site-02"


def test_server_certificate_is_not_a_client(server: tuple[Path, int]) -> None:
    root, port = server
    with pytest.raises(grpc.RpcError) as info:
        call(root, port, "srv")
    # BoringSSL already refuses a serverAuth-only certificate as a client's, or check_peer does.
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)


def test_client_of_another_ca_is_refused_by_tls(server: tuple[Path, int], tmp_path: Path) -> None:
    root, port = server
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "client", "site-01")
    pair = read_pair(other, "site-01")
    credentials = grpc.ssl_channel_credentials(root_certificates=(root / "ca" / "ca.crt").read_bytes(),
                                               private_key=pair.key_pem, certificate_chain=pair.cert_pem)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel, \
            pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(METHOD)(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
