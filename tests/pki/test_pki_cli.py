"""``fedra certs`` end to end: init, issue, revoke and list, and the exit codes of their errors."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from fedra.pki import Authority, PeerRejected, is_revoked, read_allowlist

Cli = Callable[..., Result]


def test_certs_end_to_end(cli: Cli, tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    result = cli("certs", "init", "--dir", fed)
    assert result.exit_code == 0, result.output
    assert "created CA" in result.stdout
    assert stat.S_IMODE((fed / "ca" / "ca.key").stat().st_mode) == 0o600

    result = cli("certs", "issue", "server", "srv", "--san", "localhost", "--san", "10.231.0.1",
                 "--days", "30", "--dir", fed)
    assert result.exit_code == 0, result.output
    assert "issued server 'srv'" in result.stdout

    result = cli("certs", "issue", "client", "site-01", "--dir", fed)
    assert result.exit_code == 0, result.output
    assert read_allowlist(fed / "allowlist.txt") == ["site-01"]
    authority = Authority(fed)
    assert authority.check_peer((fed / "issued" / "site-01.crt").read_bytes()) == "site-01"

    result = cli("certs", "revoke", "site-01", "--dir", fed)
    assert result.exit_code == 0, result.output
    assert "revoked 'site-01'" in result.stdout
    assert is_revoked(fed, "site-01")
    with pytest.raises(PeerRejected, match="revocation list"):
        authority.check_peer((fed / "issued" / "site-01.crt").read_bytes())

    result = cli("certs", "list", "--dir", fed)
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert set(lines) >= {"srv", "site-01"}
    assert "client" in lines["site-01"] and "revoked" in lines["site-01"]
    assert "server" in lines["srv"] and "valid" in lines["srv"]


def test_default_dir_is_federation(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("certs", "init").exit_code == 0
    assert cli("certs", "issue", "client", "c1").exit_code == 0
    assert (tmp_path / "federation" / "issued" / "c1.crt").is_file()


def test_errors_exit_with_config_code(cli: Cli, tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    result = cli("certs", "issue", "client", "site-01", "--dir", fed)
    assert result.exit_code == 78
    assert "fedra certs init" in result.stderr
    assert "Traceback" not in result.output

    assert cli("certs", "init", "--dir", fed).exit_code == 0
    result = cli("certs", "init", "--dir", fed)
    assert result.exit_code == 78 and "--force" in result.stderr
    assert cli("certs", "init", "--dir", fed, "--force").exit_code == 0

    result = cli("certs", "issue", "client", "Bad_Name", "--dir", fed)
    assert result.exit_code == 78 and "got 'Bad_Name'" in result.stderr

    result = cli("certs", "issue", "server", "srv", "--dir", fed)
    assert result.exit_code == 78 and "--san" in result.stderr

    result = cli("certs", "issue", "server", "srv", "--san", "not a host", "--dir", fed)
    assert result.exit_code == 78 and "'not a host'" in result.stderr

    assert cli("certs", "issue", "client", "c", "--dir", fed).exit_code == 0
    result = cli("certs", "issue", "client", "c", "--dir", fed)
    assert result.exit_code == 78 and "--force" in result.stderr
    assert cli("certs", "issue", "client", "c", "--force", "--dir", fed).exit_code == 0

    result = cli("certs", "revoke", "ghost", "--dir", fed)
    assert result.exit_code == 78 and "fedra certs list" in result.stderr

    assert cli("certs", "list", "--dir", tmp_path / "none").exit_code == 78


def test_usage_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    assert cli("certs", "issue", "client", "c", "--days", "0", "--dir", tmp_path).exit_code == 2
    assert cli("certs", "issue", "robot", "c", "--dir", tmp_path).exit_code == 2


def test_help_lists_the_commands(cli: Cli) -> None:
    result = cli("certs", "--help")
    assert result.exit_code == 0
    for command in ("init", "issue", "revoke", "list"):
        assert command in result.stdout


def test_default_dir_matches_the_library() -> None:
    from fedra.cli.certs import DEFAULT_DIR as CLI_DEFAULT
    from fedra.pki import DEFAULT_DIR

    assert CLI_DEFAULT == DEFAULT_DIR


def test_fedra_starts_without_cryptography() -> None:
    import subprocess
    import sys

    code = "import sys, fedra.cli.main; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
