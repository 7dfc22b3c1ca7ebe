"""The federation directory: where each file lives, name rules, atomic writes and the mutation lock.

::

    federation/
    ├── ca/ca.key          the CA's private key (0600)
    ├── ca/ca.crt          the CA's certificate (what servers and clients trust)
    ├── issued/NAME.crt    an issued certificate; NAME is unique across servers and clients
    ├── issued/NAME.key    its private key (0600)
    ├── revoked.json       revoked serials and names, with timestamps
    ├── allowlist.txt      the client names a server admits, one a line
    └── .lock              flock(2) target that serialises issue/revoke/init
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedra.errors import ConfigError

#: Default federation directory, relative to the working directory.
DEFAULT_DIR = Path("federation")

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_name(name: str) -> str:
    """Return ``name`` if it is a DNS-label-like certificate name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(f"NAME: expected 1 to 63 lowercase letters, digits or '-', starting with a letter "
                          f"or digit, got {name!r}; choose a name like 'site-01'")
    return name


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one federation directory (nothing is read or created by building one)."""

    root: Path

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.root / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        """The CA's certificate."""
        return self.root / "ca" / "ca.crt"

    @property
    def issued(self) -> Path:
        """The folder of issued certificates and keys."""
        return self.root / "issued"

    @property
    def revoked(self) -> Path:
        """The revocation list (JSON)."""
        return self.root / "revoked.json"

    @property
    def allowlist(self) -> Path:
        """The client allow-list."""
        return self.root / "allowlist.txt"

    @property
    def lock(self) -> Path:
        """The lock file for mutations."""
        return self.root / ".lock"

    def cert(self, name: str) -> Path:
        """The certificate issued to ``name``."""
        return self.issued / f"{name}.crt"

    def key(self, name: str) -> Path:
        """The private key issued to ``name``."""
        return self.issued / f"{name}.key"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one.

    Temp file in the same folder (created with ``mode`` from the start, so a key is never readable by
    others, even briefly), fsync, rename over ``path``, fsync the folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold an exclusive flock on the federation's lock file (two ``fedra certs`` never interleave)."""
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use federation directory {layout.root}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
