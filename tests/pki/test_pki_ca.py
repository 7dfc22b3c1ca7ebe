"""The CA and issuing: chains verify (cryptography's RFC 5280 verifier as the oracle), extensions are
right, keys are private, names and overwrites are checked, revocation is recorded atomically."""

from __future__ import annotations

import ipaddress
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from fedra.errors import ConfigError
from fedra.pki import (
    init_ca,
    is_revoked,
    issue,
    list_certificates,
    read_allowlist,
    read_pair,
    read_revoked,
    revoke,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def policy(root: Path) -> PolicyBuilder:
    return PolicyBuilder().store(Store([load(root / "ca" / "ca.crt")]))


def test_ca_certificate(federation: Path) -> None:
    ca = load(federation / "ca" / "ca.crt")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fedra-ca"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    ca.verify_directly_issued_by(ca)
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "10.231.0.1"])
def test_server_chain_verifies_for_each_san(federation: Path, host: str) -> None:
    leaf = load(federation / "issued" / "srv.crt")
    leaf.verify_directly_issued_by(load(federation / "ca" / "ca.crt"))
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = DNSName(host)
    chain = policy(federation).build_server_verifier(subject).verify(leaf, [])
    assert chain[0] == leaf


def test_server_chain_refuses_other_hosts(federation: Path) -> None:
    leaf = load(federation / "issued" / "srv.crt")
    with pytest.raises(VerificationError):
        policy(federation).build_server_verifier(DNSName("example.org")).verify(leaf, [])


def test_server_extensions(federation: Path) -> None:
    leaf = load(federation / "issued" / "srv.crt")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("10.231.0.1")]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "srv"


def test_client_chain_and_extensions(federation: Path) -> None:
    leaf = load(federation / "issued" / "site-01.crt")
    verified = policy(federation).build_client_verifier().verify(leaf, [])
    assert verified.chain[0] == leaf
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-01"
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_are_private(federation: Path) -> None:
    for path in (federation / "ca" / "ca.key", federation / "issued" / "srv.key", federation / "issued" / "site-01.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((federation / "ca").stat().st_mode) == 0o700


def test_key_matches_certificate(federation: Path) -> None:
    pair = read_pair(federation, "srv")
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert key.public_key() == x509.load_pem_x509_certificate(pair.cert_pem).public_key()
    assert pair.ca_pem == (federation / "ca" / "ca.crt").read_bytes()


def test_issue_adds_clients_only_to_allowlist(federation: Path) -> None:
    assert read_allowlist(federation / "allowlist.txt") == ["site-01"]


@pytest.mark.parametrize("name", ["", "Site", "-a", "a_b", "a.b", "a" * 64, "ü", "../x"])
def test_bad_names_are_refused(fresh: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="NAME: expected"):
        issue(fresh, "client", name)
    assert list((fresh / "issued").iterdir()) == []


def test_longest_name_is_accepted(fresh: Path) -> None:
    issue(fresh, "client", "a" * 63)


@pytest.mark.parametrize("san", ["bad host", "-x.org", "a..b", "", "exa_mple.org"])
def test_bad_sans_are_refused(fresh: Path, san: str) -> None:
    with pytest.raises(ConfigError, match="--san: expected"):
        issue(fresh, "server", "srv", sans=[san])


def test_server_needs_a_san_and_client_takes_none(fresh: Path) -> None:
    with pytest.raises(ConfigError, match="at least one --san"):
        issue(fresh, "server", "srv")
    with pytest.raises(ConfigError, match="expected no --san"):
        issue(fresh, "client", "c", sans=["localhost"])


def test_no_overwrite_without_force(fresh: Path) -> None:
    first = issue(fresh, "client", "site-01")
    before = first.cert_path.read_bytes()
    with pytest.raises(ConfigError, match=r"exists already.*--force"):
        issue(fresh, "client", "site-01")
    with pytest.raises(ConfigError, match="exists already"):  # names are unique across kinds
        issue(fresh, "server", "site-01", sans=["localhost"])
    assert first.cert_path.read_bytes() == before
    second = issue(fresh, "client", "site-01", force=True)
    assert second.serial != first.serial
    assert read_allowlist(fresh / "allowlist.txt") == ["site-01"]


def test_init_twice_needs_force(fresh: Path) -> None:
    ca = (fresh / "ca" / "ca.crt").read_bytes()
    with pytest.raises(ConfigError, match=r"exists already.*--force"):
        init_ca(fresh)
    assert (fresh / "ca" / "ca.crt").read_bytes() == ca
    issue(fresh, "client", "old")
    init_ca(fresh, force=True)
    assert (fresh / "ca" / "ca.crt").read_bytes() != ca
    [row] = list_certificates(fresh)
    assert row.status == "other CA"


def test_issue_without_ca_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `fedra certs init` first"):
        issue(tmp_path / "nothing", "client", "site-01")


def test_validity_cannot_outlive_the_ca(tmp_path: Path) -> None:
    init_ca(tmp_path, days=30)
    with pytest.raises(ConfigError, match="outlive the CA"):
        issue(tmp_path, "client", "c", days=365)
    issue(tmp_path, "client", "c", days=29)


@pytest.mark.parametrize("days", [0, -1, True])
def test_days_must_be_positive(fresh: Path, days: int) -> None:
    with pytest.raises(ConfigError, match="--days"):
        issue(fresh, "client", "c", days=days)


def test_naive_now_is_refused(fresh: Path) -> None:
    with pytest.raises(ConfigError, match="time-zone-aware"):
        issue(fresh, "client", "c", now=datetime(2030, 1, 1))


def test_now_override_sets_validity(fresh: Path) -> None:
    when = datetime.now(UTC) - timedelta(days=30)
    issued = issue(fresh, "client", "c", days=10, now=when)
    cert = load(issued.cert_path)
    assert cert.not_valid_after_utc == when.replace(microsecond=0) + timedelta(days=10)
    assert cert.not_valid_before_utc < when
    assert [r.status for r in list_certificates(fresh)] == ["expired"]


def test_revoke_records_serial_and_takes_name_off_allowlist(fresh: Path) -> None:
    a = issue(fresh, "client", "a")
    issue(fresh, "client", "b")
    assert not is_revoked(fresh, "a") and not is_revoked(fresh, a.serial)
    entry = revoke(fresh, "a")
    assert entry.serial == a.serial and entry.name == "a"
    assert is_revoked(fresh, "a") and is_revoked(fresh, a.serial) and not is_revoked(fresh, "b")
    assert read_allowlist(fresh / "allowlist.txt") == ["b"]
    doc = json.loads((fresh / "revoked.json").read_text())
    assert doc["version"] == 1
    assert doc["revoked"][0]["serial"] == f"{a.serial:X}"
    assert datetime.fromisoformat(doc["revoked"][0]["revoked_at"]).tzinfo is not None
    assert revoke(fresh, "a") == entry  # idempotent
    assert len(read_revoked(fresh / "revoked.json")) == 1
    # no temp files left behind by the atomic writes
    assert sorted(p.name for p in fresh.iterdir()) == [".lock", "allowlist.txt", "ca", "issued", "revoked.json"]
    rows = {r.name: r for r in list_certificates(fresh)}
    assert rows["a"].revoked and rows["a"].status == "revoked" and rows["a"].kind == "client"
    assert not rows["b"].revoked and rows["b"].status == "valid"


def test_reissue_after_revoke_is_a_new_unrevoked_serial(fresh: Path) -> None:
    old = issue(fresh, "client", "a")
    revoke(fresh, "a")
    new = issue(fresh, "client", "a", force=True)
    assert is_revoked(fresh, old.serial) and not is_revoked(fresh, new.serial)
    assert not is_revoked(fresh, "a")
    assert read_allowlist(fresh / "allowlist.txt") == ["a"]


def test_revoke_unknown_name(fresh: Path) -> None:
    with pytest.raises(ConfigError, match="no certificate issued to 'ghost'"):
        revoke(fresh, "ghost")


def test_malformed_revocation_list_is_an_error(fresh: Path) -> None:
    issue(fresh, "client", "a")
    (fresh / "revoked.json").write_text("{not json")
    with pytest.raises(ConfigError, match="malformed"):
        is_revoked(fresh, "a")


def test_allowlist_is_hand_editable(fresh: Path) -> None:
    (fresh / "allowlist.txt").write_text("# comment\n\nsite-02  # the second site\nsite-01\nsite-02\n")
    assert read_allowlist(fresh / "allowlist.txt") == ["site-02", "site-01"]
    (fresh / "allowlist.txt").write_text("Site_3\n")
    with pytest.raises(ConfigError, match=r"allowlist.txt:1: expected a client name"):
        read_allowlist(fresh / "allowlist.txt")


def test_public_api_is_sorted_and_final() -> None:
    import fedra.pki

    def key(name: str) -> tuple[int, str]:  # ruff's RUF022 order, as tests/test_exports.py
        return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name

    assert list(fedra.pki.__all__) == sorted(fedra.pki.__all__, key=key)
    for name in fedra.pki.__all__:
        assert hasattr(fedra.pki, name), name
    assert getattr(fedra.pki.Authority, "__final__", False)


def test_issue_without_ca_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        issue(tmp_path / "nothing", "client", "c")
    assert not (tmp_path / "nothing").exists()
