"""``fedra new NAME``: scaffold a job directory (``job.toml`` and ``task.py``) that runs as it is.

The files come from ``fedra/templates/<framework>/`` (package data, read with importlib.resources):
``torch`` is a small MLP on digits, ``numpy`` a softmax regression on digits in plain numpy. In
``job.toml.tmpl``, ``$name`` is replaced by the job's name; every other file is copied unchanged, with
its ``.tmpl`` suffix removed.
"""

from __future__ import annotations

import importlib.util
import tomllib
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Annotated

import typer
from rich.console import Console

from fedra.cli import exit_codes
from fedra.errors import ConfigError
from fedra.job import parse_job

__all__ = ["TemplateKind", "new", "render", "scaffold"]

_SUFFIX = ".tmpl"


class TemplateKind(StrEnum):
    """The model frameworks ``fedra new`` has a template for."""

    torch = "torch"
    numpy = "numpy"


def default_kind() -> TemplateKind:
    """``torch`` when PyTorch is installed (found without importing it), else ``numpy``."""
    return TemplateKind.torch if importlib.util.find_spec("torch") is not None else TemplateKind.numpy


def render(kind: TemplateKind, name: str) -> dict[str, str]:
    """The scaffold's files for job ``name``: file name to text. The job spec is validated first.

    Raises
    ------
    ConfigError
        ``name`` is not a valid job name (letters, digits, ``_.-``, starting with a letter or digit).
    """
    _check_name(name)
    out = {}
    for item in sorted((files("fedra") / "templates" / kind.value).iterdir(), key=lambda t: t.name):
        if not item.is_file() or not item.name.endswith(_SUFFIX):
            continue
        text = item.read_text(encoding="utf-8")
        filename = item.name.removesuffix(_SUFFIX)
        if filename == "job.toml":
            text = Template(text).substitute(name=name)
        out[filename] = text
    if "job.toml" not in out:
        raise ConfigError(f"template {kind.value!r}: expected a job.toml.tmpl in fedra/templates/{kind.value}; "
                          "the installation is incomplete: reinstall fedra")
    try:
        spec = tomllib.loads(out["job.toml"])
    except tomllib.TOMLDecodeError:  # a checked name cannot break it: the template is at fault
        raise ConfigError(f"template {kind.value!r}: job.toml.tmpl is not valid TOML") from None
    parse_job(spec, source=f"the {kind.value} template's job.toml")
    return out


def _check_name(name: str) -> None:
    # The same rule as job.name, checked before the name is put into TOML text.
    try:
        parse_job({"job": {"name": name, "module": "task.py", "rounds": 1}}, source="NAME")
    except ConfigError:
        raise ConfigError(f"NAME: expected a job name of at most 63 letters, digits, '_', '.' or '-', "
                          f"starting with a letter or digit, got {name!r}") from None


def scaffold(name: str, parent: Path, kind: TemplateKind) -> Path:
    """Create ``parent/name`` holding the ``kind`` template's files; return the new directory.

    Raises
    ------
    ConfigError
        ``name`` is not a valid job name, or ``parent/name`` already exists (nothing is overwritten).
    """
    target = parent / name
    rendered = render(kind, name)
    try:
        target.mkdir(parents=True)
    except FileExistsError:
        raise ConfigError(f"{target} already exists; expected a new directory: choose another name or "
                          "--dir, or remove it first (fedra new never overwrites)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror or exc}") from exc
    try:
        for filename, text in rendered.items():
            (target / filename).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the scaffold in {target}: {exc.strerror or exc}") from exc
    return target


def new(
    name: Annotated[str, typer.Argument(show_default=False, help="The job's name and directory.")],
    parent: Annotated[Path, typer.Option(
        "--dir", "-d", help="Create the job directory in DIR.")] = Path("."),
    framework: Annotated[TemplateKind | None, typer.Option(
        "--framework", "-f", show_default=False, case_sensitive=False,
        help="The model's framework (default: torch if installed, else numpy).")] = None,
) -> None:
    """Create a new job directory with a job.toml and a task.py that run as they are."""
    kind = framework or default_kind()
    console = Console()
    with exit_codes():
        target = scaffold(name, parent, kind)
    job = target / "job.toml"
    console.print(f"created {target}/ ({kind.value}): job.toml, task.py", soft_wrap=True, highlight=False)
    console.print(f"run it with: fedra simulate {job}", soft_wrap=True, highlight=False, markup=False)
