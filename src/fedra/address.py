"""The addresses fedra's gRPC servers listen on and its clients dial, checked before grpc sees them.

grpc is lenient where a mistake should stop the command: it reads a port modulo 65536 and a missing
port as 443, so ``--bind 127.0.0.1:99999`` listened on port 34463 and ``--server 10.0.0.5`` dialled
port 443, without a word, and a client then retried a server that could never answer. Here an address
is ``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:7788``) with a decimal port up to 65535. grpc's
other target forms (``unix:PATH``, ``dns:///...``) are refused: under mutual TLS a Unix socket's
path becomes the name the server's certificate is checked against, which no certificate carries.

A module of its own, beside :mod:`fedra.errors`, so that what renders a deployment (:mod:`fedra.deploy`,
which must not import the transport) checks an address the same way the transport does.
"""

from __future__ import annotations

from typing import Final

from fedra.errors import ConfigError

__all__ = ["check_address"]

_MAX_PORT: Final = 65535
_SCHEMES: Final = frozenset({"unix", "unix-abstract", "dns", "ipv4", "ipv6", "vsock", "xds"})


def check_address(value: str, *, what: str, listen: bool) -> str:
    """``value`` if it is an address to listen on (``listen``) or to dial; raise ConfigError if not.

    Port 0 is allowed only to listen on (the system picks a free port).
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected an address HOST:PORT as a string, got {type(value).__name__}")
    lowest = 0 if listen else 1
    example = ("0.0.0.0:7788 (port 0: any free port)" if listen else "agg.example.org:7788") + (
        ", or [::1]:7788 for an IPv6 host")
    host, sep, port = value.rpartition(":")
    if any(c.isspace() for c in value):
        problem = "it contains whitespace"
    elif "/" in value or value.split(":", 1)[0] in _SCHEMES:
        problem = "gRPC's target URIs are not accepted here, only a host and a port"
    elif not sep:
        problem = "there is no port"
    elif not host or host == "[]":
        problem = "the host is empty"
    elif not port.isascii() or not port.isdigit():
        problem = f"the port {port!r} is not a decimal number"
    elif not lowest <= int(port) <= _MAX_PORT:
        problem = f"the port {int(port)} is out of range"
    elif ":" in host and not (host.startswith("[") and host.endswith("]")):
        problem = "an IPv6 host must be in brackets, as in [::1]:7788"
    elif ("[" in host or "]" in host) and not (host.startswith("[") and host.endswith("]")
                                               and host.count("[") == 1 and host.count("]") == 1):
        problem = "its brackets do not enclose the whole host"
    else:
        return value
    raise ConfigError(f"{what}: expected HOST:PORT with a port from {lowest} to {_MAX_PORT}, got {value!r}: "
                      f"{problem}; for example {example}")
