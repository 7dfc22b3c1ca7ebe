"""fedra's command line: one module per command, an ``app`` that gathers them in :mod:`fedra.cli.main`.

Commands use only fedra's public API. Every :class:`fedra.errors.FedraError` ends a command with the
error's message on stderr and the exit code of its class (see :mod:`fedra.errors`), never a traceback.
This module holds what the commands share: the stderr console and that mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text

from fedra.errors import FedraError

__all__ = ["exit_codes", "print_error", "stderr"]


def stderr() -> Console:
    """A console on stderr (looked up at print time, so a redirected ``sys.stderr`` is honoured)."""
    return Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``message`` in red on stderr, as plain text (brackets in it are not rich markup)."""
    stderr().print(Text(f"error: {message}", style="red"), soft_wrap=True)


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn a :class:`FedraError` raised inside into its message on stderr and its exit code."""
    try:
        yield
    except FedraError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
