"""Importing files and folders from disk (``pypacs import``): each file stored as read,
what is not an instance counted apart, and a report of the lot."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pypacs.archive.service import Archive
from pypacs.errors import InvalidInstance, InvalidKind, PypacsError
from pypacs.index.writes import Outcome

# Files read and stored at once: the disk and the index, not the CPU, set the pace.
_WORKERS = 4
# What a file that is not an instance counts as, by InvalidInstance.kind.
_SKIPPED = (InvalidKind.NOT_DICOM, InvalidKind.DICOMDIR)


@dataclass
class ImportReport:
    """What an import did, file by file where a file was not imported."""

    imported: int = 0  # stored, or replacing the stored copy
    already_present: int = 0
    not_dicom: int = 0
    dicomdirs: int = 0
    # (file, why) in the files' order: skipped ones are not instances (not DICOM, DICOMDIR);
    # rejected ones are instances the archive refused, or files that could not be read.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def files_under(paths: Sequence[Path]) -> Iterator[Path]:
    """The files named, and those in the folders named (recursively, in name order)."""
    for path in paths:
        if path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    yield Path(folder) / name
        else:
            yield path


def import_files(
    archive: Archive, files: Sequence[Path], on_file: Callable[[], None] = lambda: None
) -> ImportReport:
    """Store each file as read, a few at once; ``on_file`` is called after each."""

    # What became of a file: its store's outcome, the kind it was skipped as, None: rejected.
    def one(path: Path) -> tuple[Path, Outcome | InvalidKind | None, str]:
        try:
            return path, archive.store_file(path).outcome, ""
        except InvalidInstance as exc:
            return path, exc.kind if exc.kind in _SKIPPED else None, exc.reason
        except PypacsError as exc:
            return path, None, str(exc)

    report = ImportReport()
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for path, outcome, reason in pool.map(one, files):
            if outcome in (Outcome.STORED, Outcome.REPLACED):
                report.imported += 1
            elif outcome is Outcome.DUPLICATE:
                report.already_present += 1
            elif outcome is None:
                report.rejected.append((path, reason))
            else:
                report.skipped.append((path, reason))
                if outcome is InvalidKind.DICOMDIR:
                    report.dicomdirs += 1
                else:
                    report.not_dicom += 1
            on_file()
    return report
