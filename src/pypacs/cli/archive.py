"""``pypacs import`` and ``pypacs check``: the archive's own files, without a server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pypacs.archive.check import check
from pypacs.archive.importer import files_under, import_files
from pypacs.cli.counts import counted
from pypacs.cli.flags import CREATE_HELP, Subparsers, add_setting_flags
from pypacs.config import Settings

_SECTIONS = ("storage", "storage.s3", "database", "logging")


def register(subparsers: Subparsers) -> None:
    """Add ``import`` and ``check``."""
    imp = subparsers.add_parser(
        "import",
        help="ingest DICOM files and folders (recursively)",
        epilog="exit status: 0 every file imported, already present or skipped; 1 some file "
        "was rejected; 2 wrong arguments, or no archive where the settings point",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.add_argument("--create", action="store_true", help=CREATE_HELP)
    add_setting_flags(imp, _SECTIONS)
    imp.set_defaults(run=run)

    chk = subparsers.add_parser(
        "check",
        help="re-index orphan files, report index rows without files",
        epilog="exit status: 0 consistent (after repairs); 1 something is missing or cannot be "
        "indexed; 2 wrong arguments, or no archive where the settings point (never made)",
    )
    chk.add_argument("--no-repair", action="store_true", help="only report")
    add_setting_flags(chk, _SECTIONS)
    chk.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``import`` or ``check``; the exit status their help gives."""
    if args.command == "import":
        paths = [Path(p) for p in args.paths]
        return _import(settings, paths, progress=not args.no_progress, create=args.create)
    return _check(settings, repair=not args.no_repair)


def _import(settings: Settings, paths: list[Path], *, progress: bool, create: bool) -> int:
    from tqdm import tqdm

    from pypacs.server import archive_location, open_archive

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"pypacs: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = list(files_under(paths))
    archive = open_archive(
        settings,
        create=create or archive_location(settings).explicit,
        announce=print,
        hint=", or give --create to make a new one there",
    )
    try:
        with tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar:
            report = import_files(archive, files, bar.update)
    finally:
        archive.close()
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    for path, reason in report.rejected:
        print(f"rejected {path}: {reason}")
    print(
        f"imported {report.imported}, already present {report.already_present}, "
        f"rejected {len(report.rejected)}, skipped (not DICOM) {report.not_dicom}, "
        f"skipped (DICOMDIR) {report.dicomdirs}"
    )
    return 1 if report.rejected else 0


def _check(settings: Settings, *, repair: bool) -> int:
    from pypacs.server import open_archive

    # Never made here: a new, empty archive has nothing to check, and making one would hide
    # that the settings point somewhere else than intended.
    archive = open_archive(settings, create=False, announce=print)
    try:
        report = check(archive, repair=repair)
    finally:
        archive.close()
    for uid in report.reindexed:
        print(f"re-indexed {uid}")
    for key in report.duplicates_removed:
        print(f"removed duplicate blob {key}")
    for key, reason in report.unreadable:
        print(f"not indexed {key}: {reason}")
    for uid, key in report.missing:
        print(f"missing blob {key} of instance {uid}")
    for key in report.recent:
        print(f"not indexed yet {key}: within [storage.s3] orphan_grace_seconds, left alone")
    print(
        f"{counted(report.blobs, 'blob')} checked: {len(report.reindexed)} re-indexed, "
        f"{len(report.missing)} missing, {len(report.unreadable)} not indexable"
    )
    return 0 if not (report.missing or report.unreadable) else 1
