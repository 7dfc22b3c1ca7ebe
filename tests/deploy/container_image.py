"""Session fixtures for the container tests: rootful podman, the local base image, the wheels, the image.

Nothing here reaches a registry. The base image is imported from the Debian 12 root filesystem that
``scripts/debian-rootfs`` builds (and caches); the wheels for the image are built on the host into a cache
keyed by pyproject.toml and constraints.txt (so the image's dependency layer is reused across sessions);
the image is built with ``podman build --network none`` from a build context holding only what the
Dockerfile copies. Each fixture skips, saying why, where the host cannot do its part.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["ContainerImage", "container_image", "container_podman", "container_run"]

REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/fedra-base"
IMAGE = "localhost/fedra:pytest"
CONF = REPO / "deploy" / "container" / "containers.conf"
WHEEL_CACHE = Path(os.environ.get("FEDRA_WHEEL_CACHE", "/var/cache/fedra/wheels"))


def container_env() -> dict[str, str]:
    """The environment for podman: this repository's containers.conf (runc, ulimits root may set)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def container_run(*args: str, check: bool = True, timeout: float = 300,
                  input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``; raises with podman's stderr if ``check`` and it fails."""
    done = subprocess.run(["podman", *args], env=container_env(), capture_output=True, timeout=timeout,
                          input=input, check=False)
    out = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                      done.stderr.decode(errors="replace"))
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}:\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the container tests need root (rootful podman, network namespaces)"
    for tool in ("podman", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman buildah runc iproute2)"
    return None


@pytest.fixture(scope="session")
def container_podman() -> None:
    """Skip unless rootful podman can run here."""
    reason = _skip_reason()
    if reason is not None:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _base_image() -> None:
    """Import the Debian root filesystem as ``localhost/fedra-base`` once; kept as a cache (300 MB)."""
    if container_run("image", "exists", BASE, check=False).returncode == 0:
        return
    rootfs = subprocess.run([str(REPO / "scripts" / "debian-rootfs")], capture_output=True, text=True,
                            timeout=900, check=False)
    if rootfs.returncode != 0:
        pytest.skip(f"no Debian root filesystem for the base image: {rootfs.stderr.strip()[-500:]}")
    tar = subprocess.Popen(["tar", "-C", rootfs.stdout.strip(), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    done = subprocess.run(["podman", "import", "--change",
                           "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "-", BASE],
                          stdin=tar.stdout, env=container_env(), capture_output=True, timeout=600, check=False)
    tar.stdout.close()
    tar.wait()
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _wheels() -> Path:
    """The dependency wheels (CPU torch included), built once per pyproject.toml + constraints.txt."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes())
    out = WHEEL_CACHE / key.hexdigest()[:16]
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", f"{REPO}[torch]", "setuptools", "wheel",
                           "-c", str(REPO / "constraints.txt"), "-w", str(tmp)],
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot build the wheels for the image: {done.stderr.strip()[-800:]}")
    # fedra's own wheel changes with every edit; the image builds fedra from src/ instead
    for whl in tmp.glob("fedra-*.whl"):
        whl.unlink()
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    # wheels for an older pyproject.toml or constraints.txt will not be used again (300 MB each)
    for old in WHEEL_CACHE.iterdir():
        if old != out and not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)
    return out


def _context(wheels: Path, root: Path) -> Path:
    """A build context with exactly what the Dockerfile copies (hard links where the disk allows)."""
    ctx = root / "context"
    (ctx / "deploy" / "container").mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(REPO / name, ctx / name)
    shutil.copy2(REPO / "deploy" / "container" / "entrypoint.sh", ctx / "deploy" / "container" / "entrypoint.sh")
    shutil.copytree(REPO / "src", ctx / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ctx / "wheels").mkdir()
    for whl in wheels.glob("*.whl"):
        try:
            os.link(whl, ctx / "wheels" / whl.name)
        except OSError:
            shutil.copy2(whl, ctx / "wheels" / whl.name)
    return ctx


@dataclass(frozen=True)
class ContainerImage:
    """The image built for this session: its tag, size in bytes, and how long the build took."""

    tag: str
    size: int
    build_seconds: float


#: The image built in this session. Test modules import the fixture (there is no conftest.py here), and
#: pytest makes one fixture per importing module, so the build itself is shared through this.
_BUILT: list[ContainerImage] = []


@pytest.fixture(scope="session")
def container_image(container_podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerImage]:
    """``localhost/fedra:pytest``, built from the repository's Dockerfile; removed at the end of the session
    with its runtime-stage layers (the build stage's cached layers stay, so the next session reinstalls
    the dependencies only when the wheels, pins or pyproject.toml changed)."""
    if _BUILT:
        yield _BUILT[0]
        return
    _base_image()
    wheels = _wheels()
    ctx = _context(wheels, tmp_path_factory.mktemp("image"))
    start = time.monotonic()
    container_run("build", "--network", "none", "--format", "docker", "--layers", "--build-arg",
                  f"BASE={BASE}", "-t", IMAGE, str(ctx), timeout=900)
    seconds = time.monotonic() - start
    size = int(container_run("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    print(f"image {IMAGE}: {size / 1e6:.0f} MB, built in {seconds:.0f} s")
    _BUILT.append(ContainerImage(IMAGE, size, seconds))
    yield _BUILT[0]
    container_run("rmi", "-f", IMAGE, check=False)
    # the runtime stage's cached layers hold a 1.3 GB copy of the venv per build: drop them (they carry the
    # image's title label; the build stage's layers do not, and stay as the cache of the dependency layer)
    container_run("image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=fedra", check=False)
