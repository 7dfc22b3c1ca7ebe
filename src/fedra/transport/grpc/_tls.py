"""Mutual-TLS credentials for the gRPC transport, loaded from a federation directory (``fedra certs``).

The server presents ``issued/SERVER.crt`` and requires a client certificate signed by ``ca/ca.crt``;
a client presents ``issued/CLIENT.crt`` and trusts only ``ca/ca.crt``. Only the CA *certificate* is
read, never the CA key, so a client machine needs just ``ca/ca.crt`` and its own pair. Which verified
client is admitted (revocation, allow-list) is decided per call by :class:`fedra.pki.Authority`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import grpc

from fedra.errors import ConfigError
from fedra.pki import Layout, check_name

__all__ = ["client_credentials", "server_credentials"]


def _read(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what}: expected {path}, found no such file; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc


def _pair(federation_dir: Path | str, kind: Literal["server", "client"],
          name: str) -> tuple[bytes, bytes, bytes]:
    """The PEM key, certificate and CA certificate of ``name``, with errors that say what to run."""
    check_name(name)
    layout = Layout(Path(federation_dir))
    how = (f"run `fedra certs issue server {name} --san HOST` (HOST: what clients dial)" if kind == "server"
           else f"run `fedra certs issue client {name}` and copy the pair to this machine")
    ca = _read(layout.ca_cert, "the federation CA certificate",
               "run `fedra certs init` (or point --certs at the federation directory)")
    cert = _read(layout.cert(name), f"the certificate of {kind} {name!r}", how)
    key = _read(layout.key(name), f"the private key of {kind} {name!r}", how)
    for blob, path, marker in ((ca, layout.ca_cert, b"CERTIFICATE"), (cert, layout.cert(name), b"CERTIFICATE"),
                               (key, layout.key(name), b"PRIVATE KEY")):
        if b"-----BEGIN" not in blob or marker not in blob:
            raise ConfigError(f"{path}: expected a PEM {marker.decode().lower()}, found {len(blob)} bytes "
                              f"that are not one; {how}")
    return key, cert, ca


def server_credentials(federation_dir: Path | str, server_name: str) -> grpc.ServerCredentials:
    """TLS credentials for :class:`~fedra.transport.grpc.GrpcTransport` that require a client certificate.

    Parameters
    ----------
    federation_dir
        The federation directory (``fedra certs init``), holding ``ca/ca.crt`` and ``issued/NAME.*``.
    server_name
        The name the server's certificate was issued to (``fedra certs issue server NAME``).

    Raises
    ------
    ConfigError
        A file is missing or not PEM; the message names the path and the command that makes it.
    """
    key, cert, ca = _pair(federation_dir, "server", server_name)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def client_credentials(federation_dir: Path | str, client_name: str) -> grpc.ChannelCredentials:
    """TLS credentials for :class:`~fedra.transport.grpc.GrpcConnector`: the client's pair, the CA as root.

    Parameters
    ----------
    federation_dir
        A directory laid out as the federation's: ``ca/ca.crt``, ``issued/NAME.crt``, ``issued/NAME.key``.
    client_name
        The name the client's certificate was issued to; it is the client's identity on the server.

    Raises
    ------
    ConfigError
        A file is missing or not PEM; the message names the path and the command that makes it.
    """
    key, cert, ca = _pair(federation_dir, "client", client_name)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
