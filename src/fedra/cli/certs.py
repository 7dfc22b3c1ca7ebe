"""``fedra certs``: the federation's CA and certificates (see :mod:`fedra.pki`).

``init`` creates the CA, ``issue server|client NAME`` issues a certificate, ``revoke NAME`` revokes one
(a running server notices without a restart), ``list`` shows them all. Every command takes ``--dir``
(default ``./federation``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedra.cli import exit_codes

__all__ = ["app"]

# fedra.pki (and so cryptography) is imported when a certs command runs, not when `fedra` starts.
DEFAULT_DIR = Path("federation")

app = typer.Typer(name="certs", help="The federation's CA and its certificates (mutual TLS).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
_issue = typer.Typer(name="issue", help="Issue a server or client certificate.", no_args_is_help=True,
                     add_completion=False, pretty_exceptions_enable=False)
app.add_typer(_issue, name="issue")

DirOption = Annotated[Path, typer.Option("--dir", "-d", help="The federation directory.")]
DaysOption = Annotated[int, typer.Option("--days", min=1, help="Days the certificate is valid.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing certificate.")]
NameArgument = Annotated[str, typer.Argument(
    show_default=False, help="Lowercase letters, digits and '-', unique in the federation.")]


def _say(message: str) -> None:
    Console().print(message, soft_wrap=True, highlight=False, markup=False)


@app.command("init")
def init(
    directory: DirOption = DEFAULT_DIR,
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = "fedra-ca",
    days: Annotated[int, typer.Option("--days", min=1, help="Days the CA is valid.")] = 3650,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing CA (every certificate it issued stops verifying).")] = False,
) -> None:
    """Create the federation's CA."""
    from fedra.pki import init_ca

    with exit_codes():
        path = init_ca(directory, name=name, days=days, force=force)
    _say(f"created CA {name!r}: {path} (its key {path.with_suffix('.key')} is private: mode 0600)")
    _say(f"next: fedra certs issue server NAME --san HOST --dir {directory}")


@_issue.command("server", no_args_is_help=True)
def issue_server(
    name: NameArgument,
    san: Annotated[list[str], typer.Option(
        "--san", show_default=False,
        help="A DNS name or IP address clients dial (repeat for more).")] = [],  # noqa: B006 (typer reads it)
    days: DaysOption = 365,
    force: ForceOption = False,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Issue a server certificate for NAME, valid for the host names and addresses given by --san."""
    from fedra.pki import issue

    with exit_codes():
        issued = issue(directory, "server", name, sans=san, days=days, force=force)
    _say(f"issued server {name!r} (serial {issued.serial:X}, until {issued.not_after:%Y-%m-%d}) "
         f"for {', '.join(san)}: {issued.cert_path}, {issued.key_path}")


@_issue.command("client", no_args_is_help=True)
def issue_client(
    name: NameArgument,
    days: DaysOption = 365,
    force: ForceOption = False,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Issue a client certificate; NAME is the client's identity, and is added to the allow-list."""
    from fedra.pki import issue

    with exit_codes():
        issued = issue(directory, "client", name, days=days, force=force)
    _say(f"issued client {name!r} (serial {issued.serial:X}, until {issued.not_after:%Y-%m-%d}): "
         f"{issued.cert_path}, {issued.key_path}; {name!r} is on the allow-list")


@app.command("revoke", no_args_is_help=True)
def revoke_cmd(name: NameArgument, directory: DirOption = DEFAULT_DIR) -> None:
    """Revoke NAME's certificate and take NAME off the allow-list; running servers notice at once."""
    from fedra.pki import revoke

    with exit_codes():
        entry = revoke(directory, name)
    _say(f"revoked {name!r} (serial {entry.serial:X}) at {entry.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@app.command("list")
def list_cmd(directory: DirOption = DEFAULT_DIR) -> None:
    """Show every certificate issued: name, kind, serial, expiry and whether it is revoked."""
    from fedra.pki import list_certificates

    with exit_codes():
        rows = list_certificates(directory)
    table = Table(title=f"certificates in {directory}")
    for column in ("name", "kind", "serial", "not after (UTC)", "revoked", "status"):
        table.add_column(column, no_wrap=column in ("name", "serial"))
    for row in rows:
        table.add_row(row.name, row.kind, f"{row.serial:X}", f"{row.not_after:%Y-%m-%d %H:%M}",
                      "yes" if row.revoked else "no", row.status)
    Console(width=200).print(table)
    if not rows:
        _say("no certificates issued yet: fedra certs issue server|client NAME")
