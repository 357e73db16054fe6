"""``pypacs user`` and ``pypacs token`` on a real archive folder: what they print, what the
index then holds, and the exit status 2 with a clear message for each wrong argument."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from helpers import CLI_ENV, index_rows, run_pypacs


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An archive folder made by ``pypacs import --create`` with nothing to import."""
    empty = tmp_path / "empty"
    empty.mkdir()
    made = run_pypacs(
        "import", "--create", "--data", str(tmp_path / "data"), str(empty), cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    return tmp_path / "data"


def pypacs(data: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pypacs", *args, "--data", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data.parent,
        env=CLI_ENV,
    )
    return done.returncode, done.stdout, done.stderr


def url(data: Path) -> str:
    return f"sqlite:///{data / 'index.sqlite'}"


def token_rows(data: Path) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(data / "index.sqlite")) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute("SELECT * FROM api_tokens ORDER BY created_at"))


def test_add_list_and_remove_users(data: Path) -> None:
    code, out, err = pypacs(
        data,
        "user",
        "add",
        "alice",
        "--role",
        "writer",
        "--password-stdin",
        stdin="alice-password\n",
    )
    assert (code, out, err) == (0, "added user alice (writer)\n", "")
    code, out, _ = pypacs(
        data, "user", "add", "bob", "--role", "admin", "--password-stdin", stdin="bob-password\n"
    )
    assert code == 0
    code, out, _ = pypacs(data, "user", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "ROLE", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["alice", "writer"], ["bob", "admin"]]
    assert "scrypt" not in out
    rows = {row["name"]: row for row in index_rows(url(data), "users")}
    assert rows["alice"]["password_hash"].startswith("scrypt$n=32768,r=8,p=1$")
    assert "alice-password" not in rows["alice"]["password_hash"]

    code, out, _ = pypacs(data, "user", "remove", "alice")
    assert (code, out) == (0, "removed user alice\n")
    assert [row["name"] for row in index_rows(url(data), "users")] == ["bob"]


def test_tokens_are_printed_once_and_stored_hashed(data: Path) -> None:
    pypacs(
        data,
        "user",
        "add",
        "carol",
        "--role",
        "reader",
        "--password-stdin",
        stdin="carol-password\n",
    )
    code, out, err = pypacs(data, "token", "create", "carol", "--expires", "30")
    assert code == 0
    token = out.strip()
    assert re.fullmatch(r"pypacs_[A-Za-z0-9_-]{43}", token)
    token_id = re.search(r"token ([0-9a-f]{12}) for carol, valid until \d{4}-", err)
    assert token_id is not None, err
    rows = token_rows(data)
    assert [(r["id"], r["token_hash"]) for r in rows] == [
        (token_id.group(1), hashlib.sha256(token.encode()).hexdigest())
    ]
    code, out, _ = pypacs(data, "token", "list", "carol")
    assert code == 0 and token_id.group(1) in out and token not in out
    code, out, _ = pypacs(data, "token", "revoke", token_id.group(1))
    assert (code, out) == (0, f"revoked token {token_id.group(1)}\n")
    assert token_rows(data)[0]["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("user", "add", "dave", "--role", "owner", "--password-stdin"),
            "dave-password\n",
            "unknown role 'owner'",
        ),
        (
            ("user", "add", "erin", "--role", "reader", "--password-stdin"),
            "short\n",
            "at least 8 characters",
        ),
        (
            ("user", "add", "erin", "--role", "reader", "--password-stdin"),
            "\n",
            "at least 8 characters",
        ),
        (
            ("user", "add", "a:b", "--role", "reader", "--password-stdin"),
            "long-enough\n",
            "no colon",
        ),
        (
            ("user", "add", "frank", "--role", "reader", "--password-stdin"),
            "frank-password\n",
            "exists already",
        ),
        (("user", "remove", "nobody"), None, "no user 'nobody'"),
        (("token", "create", "nobody"), None, "no user 'nobody'"),
        (("token", "create", "frank", "--expires", "0"), None, "not a number of days"),
        (("token", "create", "frank", "--expires", "soon"), None, "not a number of days"),
        (("token", "list", "nobody"), None, "no user 'nobody'"),
        (("token", "revoke", "0123456789ab"), None, "no token '0123456789ab'"),
    ],
)
def test_wrong_arguments_exit_2(
    data: Path, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    pypacs(
        data,
        "user",
        "add",
        "frank",
        "--role",
        "reader",
        "--password-stdin",
        stdin="frank-password\n",
    )
    code, out, err = pypacs(data, *args, stdin=stdin)
    assert code == 2, (out, err)
    assert message in err
    assert [row["name"] for row in index_rows(url(data), "users")] == ["frank"]


def test_no_archive_is_made_for_a_user(tmp_path: Path) -> None:
    code, _, err = pypacs(tmp_path / "none", "user", "list")
    assert code == 2
    assert "no archive at" in err
    assert not (tmp_path / "none").exists()
