"""REMOTE as ``host:port:AE``: its AE title is held to the rule ``[remotes.NAME] ae_title``
is held to in the file (PS3.5 6.2, VR AE), with one line and exit status 2, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_pypacs

EXPECTED = "expected an AE title of 1-16 printable ASCII characters without backslash"


@pytest.mark.parametrize("title", ["THIS-TITLE-IS-TOO-LONG", "A\\B"])
@pytest.mark.parametrize(
    "command",
    [["echo"], ["find", "-k", "PatientID"], ["move", "-k", "StudyInstanceUID=1"]],
)
def test_a_remote_ae_title_that_is_not_one_exits_2_with_one_line(
    tmp_path: Path, command: list[str], title: str
) -> None:
    remote = f"127.0.0.1:104:{title}"
    result = run_pypacs(command[0], remote, *command[1:], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"pypacs: configuration error: REMOTE {remote!r}: {EXPECTED}\n"


def test_the_file_holds_a_remote_to_the_same_rule(tmp_path: Path) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text('[remotes.WS]\nae_title = "THIS-TITLE-IS-TOO-LONG"\nhost = "h"\nport = 104\n')
    result = run_pypacs("echo", "WS", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"pypacs: configuration error: {config.name}: [remotes.WS] ae_title = "
        f'"THIS-TITLE-IS-TOO-LONG": {EXPECTED}\n'
    )
