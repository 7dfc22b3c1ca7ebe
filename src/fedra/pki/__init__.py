"""Identity and access: the federation's CA, certificates for servers and clients, revocation, allow-list.

Mutual TLS is fedra's default. ``fedra certs init`` creates a federation CA; ``fedra certs issue server
NAME --san ...`` and ``fedra certs issue client NAME`` issue ECDSA P-256 certificates; a client's
identity is its certificate's common name; a server admits only the clients on its allow-list, through an
:class:`Authority`, which re-reads the revocation list and allow-list when they change, so
``fedra certs revoke NAME`` takes effect without a restart. Everything is built with ``cryptography``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from fedra.pki._files import DEFAULT_DIR, Layout, check_name
from fedra.pki._lists import Revocation, read_allowlist, read_revoked

if TYPE_CHECKING:
    from fedra.pki._authority import Authority, PeerRejected, RejectReason
    from fedra.pki._ca import (
        CLOCK_SKEW,
        CertInfo,
        Issued,
        KeyPair,
        Kind,
        cert_kind,
        init_ca,
        is_revoked,
        issue,
        list_certificates,
        load_certificate,
        read_pair,
        revoke,
    )

#: What needs ``cryptography`` loads on first use: a client connecting with its certificate needs only
#: the file layout (gRPC does the TLS), and importing cryptography costs a small device ~10 MB.
_LAZY = {
    **dict.fromkeys(("Authority", "PeerRejected", "RejectReason"), "fedra.pki._authority"),
    **dict.fromkeys(("CLOCK_SKEW", "CertInfo", "Issued", "KeyPair", "Kind", "cert_kind", "init_ca", "is_revoked",
                     "issue", "list_certificates", "load_certificate", "read_pair", "revoke"), "fedra.pki._ca"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fedra.pki' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_DIR",
    "Authority",
    "CertInfo",
    "Issued",
    "KeyPair",
    "Kind",
    "Layout",
    "PeerRejected",
    "RejectReason",
    "Revocation",
    "cert_kind",
    "check_name",
    "init_ca",
    "is_revoked",
    "issue",
    "list_certificates",
    "load_certificate",
    "read_allowlist",
    "read_pair",
    "read_revoked",
    "revoke",
]
