"""Which archive a command uses: always named, never made by mistake in another folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomgen import Spec, write
from helpers import index_counts, run_pypacs
from serving import start_pypacs

pypacs = run_pypacs


def named(data: Path, *, new: bool = False) -> str:
    """The line that names the archive in ``data`` with its default SQLite index."""
    return f"{'new archive' if new else 'archive'} {data} (index sqlite:///{data / 'index.sqlite'})"


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return write(Spec("LOC1", "Where^Wanda", 1, 1, 1), folder)


def test_import_and_check_never_make_the_default_archive(tmp_path: Path, instance: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    default = elsewhere / "pypacs-data"

    imported = pypacs("import", "--no-progress", str(instance), cwd=elsewhere)
    assert imported.returncode == 2
    assert imported.stdout == ""
    assert imported.stderr == (
        f"pypacs: no archive at {default} (index sqlite:///{default / 'index.sqlite'}); "
        "name an existing one with --data DIR or --config FILE, "
        "or give --create to make a new one there\n"
    )
    checked = pypacs("check", cwd=elsewhere)
    assert checked.returncode == 2
    assert checked.stderr.startswith(f"pypacs: no archive at {default} (index ")
    assert "--create" not in checked.stderr  # check never makes one
    assert list(elsewhere.iterdir()) == []


def test_create_makes_the_default_archive_which_later_commands_name(
    tmp_path: Path, instance: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = home / "pypacs-data"

    made = pypacs("import", "--create", "--no-progress", str(instance), cwd=home)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0] == named(data, new=True)
    again = pypacs("import", "--no-progress", str(instance), cwd=home)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == named(data)
    checked = pypacs("check", cwd=home)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [
        named(data),
        "1 blob checked: 0 re-indexed, 0 missing, 0 not indexable",
    ]
    assert index_counts(f"sqlite:///{data / 'index.sqlite'}")["instance"] == 1


def test_a_data_folder_named_by_flag_is_made_by_import_never_by_check(
    tmp_path: Path, instance: Path
) -> None:
    # Relative to the current folder, shown absolute.
    made = pypacs("import", "--data", "named", "--no-progress", str(instance), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0] == named(tmp_path / "named", new=True)

    typo = pypacs("check", "--data", "nmaed", cwd=tmp_path)
    assert typo.returncode == 2
    assert f"no archive at {tmp_path / 'nmaed'} (index " in typo.stderr
    assert not (tmp_path / "nmaed").exists()


def test_a_relative_path_in_a_config_file_is_taken_from_the_file_folder(
    tmp_path: Path, instance: Path
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "pypacs.toml"
    config.write_text('[storage]\npath = "archive"\n')
    data = etc / "archive"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    made = pypacs("import", "--config", str(config), "--no-progress", str(instance), cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0] == named(data, new=True)
    by_env = pypacs("check", cwd=tmp_path, env={"PYPACS_CONFIG": str(config)})
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout.splitlines()[0] == named(data)
    assert list(elsewhere.iterdir()) == []


def test_serve_logs_the_archive_it_makes_and_then_opens(tmp_path: Path) -> None:
    data = tmp_path / "served"
    first = start_pypacs(data)
    first.kill()
    second = start_pypacs(data)
    second.kill()
    log = second.log()
    assert f"INFO pypacs.server: {named(data, new=True)}\n" in log
    assert f"INFO pypacs.server: {named(data)}\n" in log
    serving = [line for line in log.splitlines() if "serving AE PYPACS" in line]
    assert len(serving) == 2
    assert all(
        line.endswith(f"archive {data} (index sqlite:///{data / 'index.sqlite'})")
        for line in serving
    )
