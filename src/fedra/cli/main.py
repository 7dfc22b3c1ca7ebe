"""The ``fedra`` command: the typer app that gathers one module per command.

``fedra simulate`` (:mod:`fedra.cli.simulate`), ``fedra new`` (:mod:`fedra.cli.new`) and ``fedra version``.
fedra's log messages (loggers ``fedra.*``) go to stderr through rich, from WARNING up, or from INFO up with
``-v``. Importing this module imports neither a model framework nor matplotlib.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedra import __version__
from fedra.cli import certs, client, deploy_k8s, deploy_systemd, monitor, new, server, simulate

__all__ = ["app", "configure_logging", "main"]

#: Name of the handler this module installs on the ``fedra`` logger, so configuring twice replaces it.
_HANDLER = "fedra.cli"

app = typer.Typer(
    name="fedra",
    help="Federated learning, from simulation on one machine to deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate", no_args_is_help=True)(simulate.simulate)
app.command("new", no_args_is_help=True)(new.new)
app.command("server", no_args_is_help=True)(server.server)
app.command("client", no_args_is_help=True)(client.client)
app.add_typer(certs.app, name="certs")
deploy = typer.Typer(help="Render the job for the tools operators use (systemd, Kubernetes).",
                     no_args_is_help=True)
deploy.command("systemd", no_args_is_help=True)(deploy_systemd.systemd)
deploy.command("k8s", no_args_is_help=True)(deploy_k8s.k8s)
app.add_typer(deploy, name="deploy")
app.command("monitor", no_args_is_help=True)(monitor.monitor)


def configure_logging(level: int) -> None:
    """Show fedra's log records at ``level`` and above on stderr, through rich."""
    logger = logging.getLogger("fedra")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER:
            logger.removeHandler(handler)
    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                          rich_tracebacks=False, markup=False)
    handler.set_name(_HANDLER)
    logger.addHandler(handler)
    logger.setLevel(level)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show fedra's INFO messages.")] = False,
) -> None:
    """fedra: federated learning, from simulation on one machine to deployment."""
    configure_logging(logging.INFO if verbose else logging.WARNING)


@app.command()
def version() -> None:
    """Print fedra's version."""
    typer.echo(f"fedra {__version__}")


def main() -> None:
    """The console script ``fedra``."""
    app()
