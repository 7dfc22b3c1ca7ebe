"""The federation CA: create it, issue server and client certificates, revoke them, list them.

Keys are ECDSA P-256 signed with SHA-256: every TLS stack fedra meets accepts them (gRPC's BoringSSL,
OpenSSL, Go, browsers), where Ed25519 certificates are still refused by some. Leaves are backdated by
:data:`CLOCK_SKEW` so a machine whose clock runs a little behind accepts a fresh certificate.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedra.errors import ConfigError
from fedra.pki._files import Layout, atomic_write, check_name, locked
from fedra.pki._lists import (
    Revocation,
    read_allowlist,
    read_revoked,
    write_allowlist,
    write_revoked,
)

#: How far back a new certificate's ``notBefore`` is set, for clocks that lag the issuer's.
CLOCK_SKEW = timedelta(minutes=5)

Kind = Literal["server", "client"]
Status = Literal["valid", "revoked", "expired", "not yet valid", "other CA"]


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and key written under ``issued/``."""

    name: str
    kind: Kind
    serial: int
    not_after: datetime
    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One row of :func:`list_certificates`."""

    name: str
    kind: Kind | Literal["unknown"]
    serial: int
    not_after: datetime
    revoked: bool
    status: Status


@dataclass(frozen=True, slots=True)
class KeyPair:
    """PEM bytes a TLS endpoint needs: its private key, its certificate and the CA certificate it trusts."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ConfigError(f"now: expected a time-zone-aware datetime, got naive {now!r}")
    return now.astimezone(UTC)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"--days: expected a whole number of days >= 1, got {days!r}")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a PEM or DER certificate. Raises ConfigError if it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"expected an X.509 certificate (PEM or DER), found {len(data)} bytes that are "
                          f"not one ({exc})") from exc


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return load_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_ca_cert(layout: Layout) -> x509.Certificate:
    """The CA certificate alone: what a server needs to check peers (the CA key stays with the operator)."""
    if not layout.ca_cert.exists():
        raise ConfigError(f"no federation CA certificate in {layout.root}: expected {layout.ca_cert}; "
                          "run `fedra certs init` (or copy ca/ca.crt from the federation's operator)")
    return _read_cert(layout.ca_cert)


def _load_ca(layout: Layout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not layout.ca_cert.exists() or not layout.ca_key.exists():
        raise ConfigError(f"no federation CA in {layout.root}: expected {layout.ca_cert} and {layout.ca_key}; "
                          "run `fedra certs init` first (or pass --dir to point at the federation)")
    cert = _read_cert(layout.ca_cert)
    try:
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load the CA key {layout.ca_key}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{layout.ca_key}: expected an ECDSA key, found {type(key).__name__}")
    return cert, key


def init_ca(directory: Path | str, *, name: str = "fedra-ca", days: int = 3650, force: bool = False,
            now: datetime | None = None) -> Path:
    """Create the federation CA in ``directory``; return the CA certificate's path.

    Parameters
    ----------
    directory
        The federation directory (created if missing).
    name
        The CA's common name.
    days
        How long the CA is valid.
    force
        Replace an existing CA. Every certificate it issued stops verifying: issue them again.
    now
        The issue time (tests use it to make certificates of another time); default: the clock.

    Raises
    ------
    ConfigError
        A CA exists already and ``force`` is false, or an argument is invalid.
    """
    _check_days(days)
    if not name or len(name) > 64:
        raise ConfigError(f"--name: expected a CA name of 1 to 64 characters, got {name!r}")
    start = _now(now)
    layout = Layout(Path(directory))
    with locked(layout):
        if not force and (layout.ca_key.exists() or layout.ca_cert.exists()):
            raise ConfigError(f"a federation CA exists already in {layout.ca_cert}; "
                              "expected none: use it as it is, or pass --force to replace it (every "
                              "certificate it issued then stops verifying)")
        try:
            layout.ca_key.parent.mkdir(mode=0o700, exist_ok=True)  # the CA key's folder: owner only
        except OSError as exc:
            raise ConfigError(f"cannot create {layout.ca_key.parent}: {exc.strerror or exc}") from exc
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedra federation")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        try:
            atomic_write(layout.ca_key, _key_pem(key), mode=0o600)
            atomic_write(layout.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
            layout.issued.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write the CA in {layout.root}: {exc.strerror or exc}") from exc
    return layout.ca_cert


def _parse_sans(sans: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for raw in sans:
        value = raw.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
            continue
        except ValueError:
            pass
        labels = value.removeprefix("*.").split(".")
        if not value or len(value) > 253 or not all(
                label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
                and not label.startswith("-") and not label.endswith("-") for label in labels):
            raise ConfigError(f"--san: expected a DNS name (e.g. localhost, server.example.org) or an IP "
                              f"address (e.g. 127.0.0.1), got {raw!r}")
        out.append(x509.DNSName(value.lower()))
    return out


def issue(directory: Path | str, kind: Kind, name: str, *, sans: list[str] | None = None, days: int = 365,
          force: bool = False, now: datetime | None = None) -> Issued:
    """Issue a ``kind`` certificate for ``name``, signed by the federation CA.

    A server certificate carries ``sans`` as its SubjectAlternativeName (DNS names and IP addresses) and
    the serverAuth usage; a client certificate carries the clientAuth usage, and its common name (also
    its one DNS SAN) is the client's identity, added to the allow-list. The key is ECDSA P-256, written with mode 0600.

    Parameters
    ----------
    directory
        The federation directory, holding the CA from :func:`init_ca`.
    kind
        ``"server"`` or ``"client"``.
    name
        1 to 63 of ``a-z``, ``0-9`` and ``-``, starting with a letter or digit; unique in the federation.
    sans
        Server only: host names and IP addresses clients dial (at least one).
    days
        Validity; at most until the CA expires.
    force
        Replace a certificate already issued to ``name`` (the old one stays valid until revoked: revoke it
        first if it leaked).
    now
        The issue time (tests use it to make expired or future certificates); default: the clock.

    Raises
    ------
    ConfigError
        No CA, a bad name, SAN or kind, a name already issued without ``force``, or a validity that would
        outlive the CA.
    """
    check_name(name)
    _check_days(days)
    if kind not in ("server", "client"):
        raise ConfigError(f"KIND: expected 'server' or 'client', got {kind!r}")
    sans = list(sans or [])
    if kind == "server" and not sans:
        raise ConfigError(f"server {name!r}: expected at least one --san (the host names or IP addresses "
                          "clients dial, e.g. --san localhost --san 127.0.0.1), got none")
    if kind == "client" and sans:
        raise ConfigError(f"client {name!r}: expected no --san (a client's identity is its name), got {sans}")
    # A client gets its name as a DNS SAN too: RFC 5280 verifiers (cryptography's client verifier, Go's)
    # want a SAN in every leaf; the common name stays the identity fedra reads.
    alt_names = _parse_sans(sans) if kind == "server" else [x509.DNSName(name)]
    start = _now(now)
    not_after = start + timedelta(days=days)
    layout = Layout(Path(directory))
    _load_ca(layout)  # before locked() creates the directory: a missing CA is the likelier mistake
    with locked(layout):
        ca_cert, ca_key = _load_ca(layout)
        if not_after > ca_cert.not_valid_after_utc:
            raise ConfigError(f"--days {days}: the certificate would outlive the CA, which expires "
                              f"{ca_cert.not_valid_after_utc:%Y-%m-%d}; expected at most "
                              f"{max((ca_cert.not_valid_after_utc - start).days, 0)} days")
        cert_path, key_path = layout.cert(name), layout.key(name)
        if not force and (cert_path.exists() or key_path.exists()):
            raise ConfigError(f"{cert_path} exists already; expected a new name: choose another, or pass "
                              "--force to replace it (revoke the old certificate first if it leaked)")
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
        )
        cert = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False).sign(
            ca_key, hashes.SHA256())
        try:
            atomic_write(key_path, _key_pem(key), mode=0o600)
            atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            if kind == "client":
                names = read_allowlist(layout.allowlist)
                if name not in names:
                    write_allowlist(layout.allowlist, [*names, name])
        except OSError as exc:
            raise ConfigError(f"cannot write {cert_path}: {exc.strerror or exc}") from exc
    return Issued(name=name, kind=kind, serial=cert.serial_number, not_after=cert.not_valid_after_utc,
                  cert_path=cert_path, key_path=key_path)


def revoke(directory: Path | str, name: str, *, now: datetime | None = None) -> Revocation:
    """Revoke the certificate issued to ``name`` and take ``name`` off the allow-list.

    Idempotent: revoking a revoked certificate returns its first entry. A server that holds an
    :class:`~fedra.pki.Authority` picks the change up on its next check, without a restart.

    Raises
    ------
    ConfigError
        No certificate is issued to ``name``, or the revocation list is malformed.
    """
    check_name(name)
    layout = Layout(Path(directory))
    cert_path = layout.cert(name)
    with locked(layout):
        if not cert_path.exists():
            raise ConfigError(f"no certificate issued to {name!r}: expected {cert_path}; "
                              "see `fedra certs list` for the names issued")
        serial = _read_cert(cert_path).serial_number
        entries = read_revoked(layout.revoked)
        entry = next((e for e in entries if e.serial == serial), None)
        try:
            if entry is None:
                entry = Revocation(name=name, serial=serial, revoked_at=_now(now))
                write_revoked(layout.revoked, [*entries, entry])
            names = read_allowlist(layout.allowlist)
            if name in names:
                write_allowlist(layout.allowlist, [n for n in names if n != name])
        except OSError as exc:
            raise ConfigError(f"cannot write {layout.revoked}: {exc.strerror or exc}") from exc
    return entry


def is_revoked(directory: Path | str, serial_or_name: int | str) -> bool:
    """Whether a serial (an ``int``) or the certificate now issued to a name (a ``str``) is revoked.

    For a name with no certificate on disk any more, whether an entry of that name exists.
    """
    layout = Layout(Path(directory))
    entries = read_revoked(layout.revoked)
    if isinstance(serial_or_name, int):
        return any(e.serial == serial_or_name for e in entries)
    name = check_name(serial_or_name)
    cert_path = layout.cert(name)
    if cert_path.exists():
        serial = _read_cert(cert_path).serial_number
        return any(e.serial == serial for e in entries)
    return any(e.name == name for e in entries)


def cert_kind(cert: x509.Certificate) -> Kind | Literal["unknown"]:
    """``"server"`` or ``"client"`` from the extended key usage; ``"unknown"`` for anything else."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "unknown"
    if ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        return "client"
    return "unknown"


def list_certificates(directory: Path | str, *, now: datetime | None = None) -> list[CertInfo]:
    """Every certificate under ``issued/``, sorted by name, with its kind, serial, expiry and status.

    Raises
    ------
    ConfigError
        No CA in ``directory`` (run ``fedra certs init`` first).
    """
    layout = Layout(Path(directory))
    ca_cert, _ = _load_ca(layout)
    revoked = {e.serial for e in read_revoked(layout.revoked)}
    at = _now(now)
    rows = []
    for path in sorted(layout.issued.glob("*.crt")):
        cert = _read_cert(path)
        status: Status
        try:
            cert.verify_directly_issued_by(ca_cert)
            trusted = True
        except (ValueError, TypeError, InvalidSignature):
            trusted = False
        if not trusted:
            status = "other CA"
        elif cert.serial_number in revoked:
            status = "revoked"
        elif at > cert.not_valid_after_utc:
            status = "expired"
        elif at < cert.not_valid_before_utc:
            status = "not yet valid"
        else:
            status = "valid"
        rows.append(CertInfo(name=path.stem, kind=cert_kind(cert), serial=cert.serial_number,
                             not_after=cert.not_valid_after_utc, revoked=cert.serial_number in revoked,
                             status=status))
    return rows


def read_pair(directory: Path | str, name: str) -> KeyPair:
    """The PEM key and certificate issued to ``name``, and the CA certificate: what a TLS endpoint loads.

    Raises
    ------
    ConfigError
        No CA, or nothing issued to ``name``.
    """
    check_name(name)
    layout = Layout(Path(directory))
    _load_ca(layout)
    try:
        return KeyPair(key_pem=layout.key(name).read_bytes(), cert_pem=layout.cert(name).read_bytes(),
                       ca_pem=layout.ca_cert.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"no certificate issued to {name!r}: expected {exc.filename}; "
                          f"run `fedra certs issue server|client {name}` first") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate of {name!r}: {exc.strerror or exc}") from exc
