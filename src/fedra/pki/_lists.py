"""The two lists a running server re-reads: ``revoked.json`` and ``allowlist.txt``.

``revoked.json`` is ``{"version": 1, "revoked": [{"name", "serial", "revoked_at"}, ...]}`` with the
serial as uppercase hex (as ``openssl x509 -serial`` prints it) and the time as ISO 8601 UTC.
``allowlist.txt`` holds one client name a line; blank lines and ``#`` comments are ignored, so an
operator may edit it by hand. Both are rewritten atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fedra.errors import ConfigError
from fedra.pki._files import _NAME, atomic_write

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of the revocation list: the certificate's serial, its name, and when it was revoked."""

    name: str
    serial: int
    revoked_at: datetime


def read_revoked(path: Path) -> list[Revocation]:
    """The entries of ``revoked.json``; no file means none. Raises ConfigError if it is malformed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != _VERSION or not isinstance(doc.get("revoked"), list):
            raise ValueError(f"expected an object with version {_VERSION} and a 'revoked' list")
        out = []
        for item in doc["revoked"]:
            at = datetime.fromisoformat(item["revoked_at"])
            if at.tzinfo is None:
                raise ValueError("revoked_at has no time zone")
            out.append(Revocation(name=str(item["name"]), serial=int(item["serial"], 16), revoked_at=at))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected a fedra revocation list, found malformed content ({exc}); "
                          "restore it from a backup, or fix it by hand") from exc
    return out


def write_revoked(path: Path, entries: list[Revocation]) -> None:
    """Rewrite ``revoked.json`` atomically with ``entries``."""
    doc = {"version": _VERSION, "revoked": [
        {"name": e.name, "serial": f"{e.serial:X}", "revoked_at": e.revoked_at.isoformat()} for e in entries]}
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())


def read_allowlist(path: Path) -> list[str]:
    """The names in ``allowlist.txt``, in file order; no file means none. Raises ConfigError on a bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    names: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if _NAME.fullmatch(entry) is None:
            raise ConfigError(f"{path}:{number}: expected a client name (lowercase letters, digits, '-'), "
                              f"got {entry!r}; fix or remove that line")
        if entry not in names:
            names.append(entry)
    return names


def write_allowlist(path: Path, names: list[str]) -> None:
    """Rewrite ``allowlist.txt`` atomically with ``names`` (sorted)."""
    header = "# Client names this federation's servers admit, one a line (fedra certs issue/revoke keep it).\n"
    atomic_write(path, (header + "".join(f"{n}\n" for n in sorted(set(names)))).encode())
