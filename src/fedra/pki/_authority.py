"""What a server holds to admit clients: the CA, the revocation list and the allow-list, re-read on change.

TLS (gRPC's, with the CA as root) proves the peer holds the key of a certificate chaining to the CA;
:meth:`Authority.check_peer` then decides whether that certificate's holder is admitted, and names it.
It checks again what TLS checked (signature, validity) so it is also safe to call on its own.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fedra.errors import AccessDenied, ConfigError
from fedra.pki._ca import _load_ca_cert, _now, cert_kind, load_certificate
from fedra.pki._files import _NAME, Layout
from fedra.pki._lists import read_allowlist, read_revoked


class RejectReason(StrEnum):
    """Why :meth:`Authority.check_peer` refused a certificate."""

    malformed = "malformed"
    untrusted = "untrusted"
    not_client = "not_client"
    expired = "expired"
    not_yet_valid = "not_yet_valid"
    revoked = "revoked"
    not_allowed = "not_allowed"


class PeerRejected(AccessDenied):
    """A peer's certificate is not admitted; ``reason`` says why, ``name`` is its common name if read."""

    def __init__(self, reason: RejectReason, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.name = name


_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    # Inode too: an atomic rewrite (rename) changes it even within one mtime tick.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if len(values) == 1 else None


@final
class Authority:
    """The federation's trust state for a server: CA certificate, revoked serials, admitted client names.

    Parameters
    ----------
    directory
        The federation directory (``fedra certs init``).
    auto_reload
        Let :meth:`check_peer` call :meth:`reload_if_changed` first (two ``stat`` calls), so a revocation
        or an allow-list edit applies to the next connection. Off, the owner calls it when it likes.

    Raises
    ------
    ConfigError
        No CA in ``directory``, or a malformed revocation list or allow-list.
    """

    def __init__(self, directory: Path | str, *, auto_reload: bool = True) -> None:
        self._layout = Layout(Path(directory))
        self._ca = _load_ca_cert(self._layout)
        self.auto_reload = auto_reload
        self._lock = threading.Lock()
        self._stamps: tuple[_Stamp, _Stamp] = (None, None)
        self._revoked: frozenset[int] = frozenset()
        self._allowed: frozenset[str] = frozenset()
        self._load()

    def _load(self) -> None:
        stamps = (_stamp(self._layout.revoked), _stamp(self._layout.allowlist))
        revoked = frozenset(e.serial for e in read_revoked(self._layout.revoked))
        allowed = frozenset(read_allowlist(self._layout.allowlist))
        # Swap all three together; readers see old or new sets, never a mix worth worrying about.
        self._revoked, self._allowed, self._stamps = revoked, allowed, stamps

    @property
    def ca_certificate(self) -> x509.Certificate:
        """The CA certificate."""
        return self._ca

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate as PEM (gRPC's ``root_certificates``)."""
        return self._ca.public_bytes(serialization.Encoding.PEM)

    @property
    def allowed(self) -> frozenset[str]:
        """The client names admitted, as last loaded."""
        return self._allowed

    @property
    def revoked_serials(self) -> frozenset[int]:
        """The revoked serials, as last loaded."""
        return self._revoked

    def reload_if_changed(self) -> bool:
        """Re-read ``revoked.json`` and ``allowlist.txt`` if either changed on disk; return whether it did.

        Raises
        ------
        ConfigError
            A list became malformed; the previous state is kept (the caller may keep serving on it, or
            refuse everyone).
        """
        stamps = (_stamp(self._layout.revoked), _stamp(self._layout.allowlist))
        if stamps == self._stamps:
            return False
        with self._lock:
            if (_stamp(self._layout.revoked), _stamp(self._layout.allowlist)) == self._stamps:
                return False
            self._load()
        return True

    def check_peer(self, certificate: bytes | x509.Certificate, *, now: datetime | None = None) -> str:
        """Return the client name of ``certificate`` if this federation admits it, else raise.

        Parameters
        ----------
        certificate
            The peer's leaf certificate, PEM or DER bytes (what gRPC's auth context gives) or parsed.
        now
            The time to check validity at; default: the clock.

        Raises
        ------
        PeerRejected
            With ``reason``: ``malformed``, ``untrusted`` (not signed by this CA), ``not_client`` (a server
            or CA certificate, or no valid name), ``expired``, ``not_yet_valid``, ``revoked`` or
            ``not_allowed`` (not on the allow-list).
        """
        if self.auto_reload:
            self.reload_if_changed()
        if isinstance(certificate, x509.Certificate):
            cert = certificate
        else:
            try:
                cert = load_certificate(bytes(certificate))
            except ConfigError as exc:
                raise PeerRejected(RejectReason.malformed, str(exc)) from exc
        name = _common_name(cert)
        who = f"certificate {name!r} (serial {cert.serial_number:X})"
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PeerRejected(
                RejectReason.untrusted,
                f"{who}: expected a certificate signed by this federation's CA "
                f"({self._ca.subject.rfc4514_string()}), found one issued by {cert.issuer.rfc4514_string()} "
                "that does not verify; issue the client a certificate with `fedra certs issue client`",
                name=name) from exc
        kind = cert_kind(cert)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = True  # fedra always writes BasicConstraints; without it, refuse
        if kind != "client" or is_ca or name is None or _NAME.fullmatch(name) is None:
            raise PeerRejected(
                RejectReason.not_client,
                f"{who}: expected a client certificate (clientAuth usage, not a CA, a valid name), found a "
                f"{kind} certificate; a client must present the certificate from "
                "`fedra certs issue client NAME`",
                name=name)
        at = _now(now)
        if at > cert.not_valid_after_utc:
            raise PeerRejected(
                RejectReason.expired,
                f"{who}: expected a certificate valid at {at:%Y-%m-%d %H:%M} UTC, found it expired "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; issue a new one with "
                f"`fedra certs issue client {name} --force`",
                name=name)
        if at < cert.not_valid_before_utc:
            raise PeerRejected(
                RejectReason.not_yet_valid,
                f"{who}: expected a certificate valid at {at:%Y-%m-%d %H:%M} UTC, found it valid only from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clocks of server and issuer",
                name=name)
        if cert.serial_number in self._revoked:
            raise PeerRejected(
                RejectReason.revoked,
                f"{who}: expected an unrevoked certificate, found it on the revocation list; "
                f"issue a new one with `fedra certs issue client {name} --force` if it should be admitted",
                name=name)
        if name not in self._allowed:
            raise PeerRejected(
                RejectReason.not_allowed,
                f"{who}: expected a client on the allow-list ({self._layout.allowlist}), found {name!r} is "
                "not; add it there (or issue it with `fedra certs issue client`) to admit it",
                name=name)
        return name
