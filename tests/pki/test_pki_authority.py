"""The server's gatekeeper: :class:`fedra.pki.Authority` admits exactly the valid, unrevoked, allowed
client certificates of its own CA, names why it refuses the rest, and follows revocations live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedra.errors import AccessDenied, ConfigError
from fedra.pki import Authority, PeerRejected, RejectReason, init_ca, issue, revoke


def pem(root: Path, name: str) -> bytes:
    return (root / "issued" / f"{name}.crt").read_bytes()


def rejected(authority: Authority, cert: bytes, reason: RejectReason, **kw: datetime) -> PeerRejected:
    with pytest.raises(PeerRejected) as info:
        authority.check_peer(cert, **kw)
    assert info.value.reason is reason, str(info.value)
    assert isinstance(info.value, AccessDenied) and info.value.exit_code == 77
    return info.value


def test_admits_an_issued_client_by_name(federation: Path) -> None:
    authority = Authority(federation)
    assert authority.check_peer(pem(federation, "site-01")) == "site-01"
    der = x509.load_pem_x509_certificate(pem(federation, "site-01")).public_bytes(serialization.Encoding.DER)
    assert authority.check_peer(der) == "site-01"
    assert authority.check_peer(x509.load_der_x509_certificate(der)) == "site-01"
    assert authority.allowed == frozenset({"site-01"})
    assert authority.ca_pem == (federation / "ca" / "ca.crt").read_bytes()


def test_rejects_a_certificate_of_another_ca(federation: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    issue(tmp_path / "other", "client", "site-01")  # same name, other CA
    error = rejected(Authority(federation), pem(tmp_path / "other", "site-01"), RejectReason.untrusted)
    assert "signed by this federation's CA" in str(error)
    assert error.name == "site-01"


def test_rejects_a_server_certificate_presented_as_a_client(federation: Path) -> None:
    error = rejected(Authority(federation), pem(federation, "srv"), RejectReason.not_client)
    assert "expected a client certificate" in str(error)


def test_rejects_the_ca_certificate_itself(federation: Path) -> None:
    rejected(Authority(federation), (federation / "ca" / "ca.crt").read_bytes(), RejectReason.not_client)


def test_rejects_garbage(federation: Path) -> None:
    rejected(Authority(federation), b"not a certificate", RejectReason.malformed)
    rejected(Authority(federation), b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
             RejectReason.malformed)


def test_rejects_an_expired_certificate(fresh: Path) -> None:
    issue(fresh, "client", "old", days=30, now=datetime.now(UTC) - timedelta(days=31))
    error = rejected(Authority(fresh), pem(fresh, "old"), RejectReason.expired)
    assert "expired" in str(error) and "--force" in str(error)


def test_rejects_a_certificate_not_yet_valid(fresh: Path) -> None:
    issue(fresh, "client", "future", days=30, now=datetime.now(UTC) + timedelta(days=2))
    rejected(Authority(fresh), pem(fresh, "future"), RejectReason.not_yet_valid)


def test_validity_honours_the_given_time(federation: Path) -> None:
    authority = Authority(federation)
    later = datetime.now(UTC) + timedelta(days=400)
    rejected(authority, pem(federation, "site-01"), RejectReason.expired, now=later)


def test_revocation_applies_on_reload_without_a_new_object(fresh: Path) -> None:
    issue(fresh, "client", "a")
    authority = Authority(fresh, auto_reload=False)
    assert authority.check_peer(pem(fresh, "a")) == "a"
    revoke(fresh, "a")
    assert authority.check_peer(pem(fresh, "a")) == "a"  # not re-read yet
    assert authority.reload_if_changed() is True
    error = rejected(authority, pem(fresh, "a"), RejectReason.revoked)
    assert "revocation list" in str(error)
    assert authority.reload_if_changed() is False  # nothing changed since


def test_revocation_applies_at_once_with_auto_reload(fresh: Path) -> None:
    issue(fresh, "client", "a")
    issue(fresh, "client", "b")
    authority = Authority(fresh)
    assert authority.check_peer(pem(fresh, "a")) == "a"
    revoke(fresh, "a")
    rejected(authority, pem(fresh, "a"), RejectReason.revoked)
    assert authority.check_peer(pem(fresh, "b")) == "b"


def test_revoked_even_if_put_back_on_the_allowlist(fresh: Path) -> None:
    issue(fresh, "client", "a")
    revoke(fresh, "a")
    (fresh / "allowlist.txt").write_text("a\n")
    rejected(Authority(fresh), pem(fresh, "a"), RejectReason.revoked)


def test_reissued_client_is_admitted_again(fresh: Path) -> None:
    issue(fresh, "client", "a")
    old = pem(fresh, "a")
    authority = Authority(fresh)
    revoke(fresh, "a")
    issue(fresh, "client", "a", force=True)
    assert authority.check_peer(pem(fresh, "a")) == "a"
    rejected(authority, old, RejectReason.revoked)


def test_rejects_a_client_not_on_the_allowlist(fresh: Path) -> None:
    issue(fresh, "client", "a")
    issue(fresh, "client", "b")
    authority = Authority(fresh)
    (fresh / "allowlist.txt").write_text("b\n")  # an operator's hand edit
    error = rejected(authority, pem(fresh, "a"), RejectReason.not_allowed)
    assert "allow-list" in str(error)
    assert authority.check_peer(pem(fresh, "b")) == "b"
    (fresh / "allowlist.txt").unlink()
    rejected(authority, pem(fresh, "b"), RejectReason.not_allowed)


def test_malformed_list_fails_closed_and_keeps_state(fresh: Path) -> None:
    issue(fresh, "client", "a")
    authority = Authority(fresh)
    (fresh / "revoked.json").write_text("[]")
    with pytest.raises(ConfigError, match="malformed") as info:
        authority.check_peer(pem(fresh, "a"))
    assert not isinstance(info.value, PeerRejected)
    assert authority.allowed == frozenset({"a"})


def test_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedra certs init"):
        Authority(tmp_path)
