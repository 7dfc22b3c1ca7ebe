"""The image's entry point script without a container: the health check connects for real, and the
server role records the address it binds. Runs anywhere with bash."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "container" / "entrypoint.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _run(*args: str, tmp: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"TMPDIR": str(tmp), "FEDRA_PORT": "7788", "PATH": path or os.environ["PATH"]}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30,
                          check=False)


def test_health_passes_while_the_server_port_listens_and_fails_when_closed(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    (tmp_path / "fedra-server.addr").write_text(f"0.0.0.0:{port}\n")  # a wildcard bind is probed on loopback
    try:
        assert _run("health", tmp=tmp_path).returncode == 0
    finally:
        listener.close()
    done = _run("health", tmp=tmp_path)
    assert done.returncode != 0
    assert str(port) in done.stderr


def test_server_role_records_its_bind_address(tmp_path: Path) -> None:
    # a stand-in `fedra` on PATH: the script execs it after writing the address
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fedra"
    fake.write_text("#!/bin/sh\necho \"fedra $*\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    path = f"{bin_dir}:/usr/bin:/bin"
    done = _run("server", "/job/job.toml", "--bind", "10.0.0.5:9000", tmp=tmp_path, path=path)
    assert done.stdout.strip() == "fedra server /job/job.toml --bind 10.0.0.5:9000"
    assert (tmp_path / "fedra-server.addr").read_text().strip() == "10.0.0.5:9000"
    done = _run("server", "/job/job.toml", "--bind=[::1]:7000", tmp=tmp_path, path=path)
    assert (tmp_path / "fedra-server.addr").read_text().strip() == "[::1]:7000"
    # the client role trains with the image's sandbox setting unless the command line says otherwise
    done = _run("client", "--name", "a", tmp=tmp_path, path=path)
    assert done.stdout.strip() == "fedra client --sandbox off --name a"
