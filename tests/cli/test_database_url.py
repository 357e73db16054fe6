"""A database URL's password is never printed or logged: not when the archive is named, not
in the server's log, not in an error that quotes the URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomgen import Spec, write
from helpers import index_counts, pg_database, run_pypacs
from qrscp import free_port
from serving import start_pypacs

PASSWORD = "Hunter2-s3cret"


pypacs = run_pypacs


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, as a URL without a password."""
    yield from pg_database()


def with_password(url: str) -> str:
    """The URL with PASSWORD for its user (the test server trusts local users: it is unused)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def masked(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:***@{host}"


@pytest.mark.postgresql
def test_import_check_and_serve_mask_the_password(tmp_path: Path, pg_url: str) -> None:
    url = with_password(pg_url)
    data = tmp_path / "data"
    source = tmp_path / "in"
    source.mkdir()
    write(Spec("PW1", "Secret^Sam", 1, 1, 1), source)

    imported = pypacs(
        "import", "--data", str(data), "--database-url", url, str(source), cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[0] == f"new archive {data} (index {masked(pg_url)})"
    checked = pypacs(
        "check", "--data", str(data), "--database-url", url, "--log-level", "DEBUG", cwd=tmp_path
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[0] == f"archive {data} (index {masked(pg_url)})"
    assert index_counts(pg_url)["instance"] == 1

    server = start_pypacs(data, "--database-url", url, "--log-level", "DEBUG")
    server.kill()
    log = server.log()
    assert f"INFO pypacs.server: archive {data} (index {masked(pg_url)})\n" in log
    for output in (imported.stdout, imported.stderr, checked.stdout, checked.stderr, log):
        assert PASSWORD not in output


def test_errors_that_quote_the_url_mask_the_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    unsupported = f"mysql://pacs:{PASSWORD}@db.example/pacs"
    result = pypacs("check", "--data", str(data), "--database-url", unsupported, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "pypacs: configuration error: unsupported database 'mysql' in "
        "'mysql://pacs:***@db.example/pacs': expected sqlite or postgresql\n"
    )

    closed = free_port()
    unreachable = f"postgresql+psycopg://pacs:{PASSWORD}@127.0.0.1:{closed}/pacs"
    result = pypacs(
        "import",
        "--data",
        str(tmp_path / "new"),
        "--database-url",
        unreachable,
        str(data),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"new archive {tmp_path / 'new'} (index postgresql+psycopg://pacs:***@127.0.0.1:{closed}/pacs)"
    ]
    # The database's own words go to the log (stderr here), the summary line says where.
    *logged, summary = result.stderr.splitlines()
    assert summary == "pypacs: index unavailable: the reason is in the server's log"
    assert any("connection failed" in line for line in logged)
    assert PASSWORD not in result.stdout + result.stderr

    not_a_url = f"postgresql+psycopg://pacs:{PASSWORD}@127.0.0.1:port/pacs"
    result = pypacs("check", "--data", str(data), "--database-url", not_a_url, cwd=tmp_path)
    assert result.returncode == 2
    assert PASSWORD not in result.stdout + result.stderr
    assert "pacs:***@127.0.0.1:port/pacs" in result.stderr
