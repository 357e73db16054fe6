"""The command line: ``pypacs serve|import|check|find|echo|get|move``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pypacs import __version__, logs
from pypacs.config import SETTINGS, Settings, load, parse_flag
from pypacs.errors import ConfigError, InvalidInstance, PypacsError

log = logging.getLogger("pypacs.cli")
DEFAULT_CONFIG = "pypacs.toml"
# Commands that open the archive (get only without --output, which makes no difference here).
_ARCHIVE_COMMANDS = ("serve", "import", "check", "get")
_CREATE_HELP = (
    "make a new archive when the folder (--data, [storage] path) holds none; without it, "
    "only a folder named by --data or a configuration file is made, never the default one"
)
_RETRIEVE_EXIT_STATUS = (
    "exit status: 0 every sub-operation succeeded (also when nothing matched); "
    "1 some failed or ended with a warning (final status 0xB000 or a cancel); "
    "2 the remote answered with a failure status, refused, aborted or could not be "
    "reached, or the arguments are wrong"
)


def _add_setting_flags(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file (default: $PYPACS_CONFIG, or ./{DEFAULT_CONFIG} if present)",
    )
    for setting in SETTINGS:
        if setting.section in sections:
            parser.add_argument(
                setting.flag,
                dest=setting.dest,
                metavar="VALUE",
                help=f"{setting.help} ([{setting.section}] {setting.key}; {setting.default!r})",
            )


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config or os.environ.get("PYPACS_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides = {}
    for setting in SETTINGS:
        text = getattr(args, setting.dest, None)
        if text is not None:
            overrides[(setting.section, setting.key)] = parse_flag(setting, text)
    return load(Path(path) if path else None, overrides)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    for flag, const, text in (
        ("-P", "PATIENT_ROOT", "Patient Root information model"),
        ("-S", "STUDY_ROOT", "Study Root information model (default)"),
        ("-O", "PATIENT_STUDY_ONLY", "Patient/Study Only information model"),
    ):
        model.add_argument(flag, dest="model", action="store_const", const=const, help=text)
    parser.add_argument(
        "-L",
        "--level",
        default=None,
        help="QueryRetrieveLevel (default STUDY, or PATIENT with -P/-O)",
    )


def _add_calling_ae(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ae-title",
        dest="server__ae_title",
        metavar="VALUE",
        help="our calling AE title ([server] ae_title)",
    )


def _add_retrieve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("remote", metavar="REMOTE", help="a [remotes] name or host:port:AE")
    _add_model_flags(parser)
    parser.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key by keyword or gggg,eeee, e.g. StudyInstanceUID=1.2.3",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pypacs", description="A DICOM archive.")
    parser.add_argument("--version", action="version", version=f"pypacs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the archive: DICOM and HTTP")
    _add_setting_flags(
        serve, ("server", "storage", "database", "query", "retrieve", "web", "logging")
    )

    imp = sub.add_parser(
        "import",
        help="ingest DICOM files and folders (recursively)",
        epilog="exit status: 0 every file imported, already present or skipped; 1 some file "
        "was rejected; 2 wrong arguments, or no archive where the settings point",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.add_argument("--create", action="store_true", help=_CREATE_HELP)
    _add_setting_flags(imp, ("storage", "database", "logging"))

    find = sub.add_parser("find", help="C-FIND on a remote archive, like DCMTK's findscu")
    find.add_argument("remote", metavar="REMOTE", help="a [remotes] name or host:port:AE")
    _add_model_flags(find)
    find.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="a key by keyword or gggg,eeee; no value: return it",
    )
    find.add_argument(
        "--relational",
        action="store_true",
        help="ask for relational queries (extended negotiation)",
    )
    find.add_argument("--json", action="store_true", help="print DICOM JSON, one object a line")
    _add_setting_flags(find, ("logging",))
    _add_calling_ae(find)

    echo = sub.add_parser(
        "echo",
        help="C-ECHO a remote archive",
        epilog="exit status: 0 the remote answered success; 2 it refused or did not answer",
    )
    echo.add_argument("remote", metavar="REMOTE", help="a [remotes] name or host:port:AE")
    _add_setting_flags(echo, ("logging",))
    _add_calling_ae(echo)

    get = sub.add_parser(
        "get",
        help="C-GET from a remote archive into ours (or --output DIR), like DCMTK's getscu",
        epilog=_RETRIEVE_EXIT_STATUS,
    )
    _add_retrieve_arguments(get)
    get.add_argument(
        "--output",
        metavar="DIR",
        help="write each instance as DIR/<SOP Instance UID>.dcm instead of archiving it",
    )
    get.add_argument("--create", action="store_true", help=_CREATE_HELP)
    _add_setting_flags(get, ("storage", "database", "logging"))
    _add_calling_ae(get)

    move = sub.add_parser(
        "move",
        help="C-MOVE from a remote archive to an AE (default: ours), like DCMTK's movescu",
        epilog=_RETRIEVE_EXIT_STATUS,
    )
    _add_retrieve_arguments(move)
    move.add_argument(
        "--dest",
        metavar="AE",
        help="move destination AE title, known to the remote (default: [server] ae_title)",
    )
    _add_setting_flags(move, ("logging",))
    _add_calling_ae(move)

    chk = sub.add_parser(
        "check",
        help="re-index orphan files, report index rows without files",
        epilog="exit status: 0 consistent (after repairs); 1 something is missing or cannot be "
        "indexed; 2 wrong arguments, or no archive where the settings point (never made)",
    )
    chk.add_argument("--no-repair", action="store_true", help="only report")
    _add_setting_flags(chk, ("storage", "database", "logging"))
    return parser


def _redactions(settings: Settings, command: str) -> dict[str, str]:
    """The database URL as written → with its password masked, for commands that use it."""
    if command not in _ARCHIVE_COMMANDS or not settings[("database", "url")]:
        return {}
    from pypacs.server import url_redactions

    return url_redactions(settings[("database", "url")])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        logs.setup(settings[("logging", "level")], _redactions(settings, args.command))
        if args.command == "serve":
            from pypacs.server import run

            run(settings)
            return 0
        if args.command == "find":
            from pypacs.findcmd import run_find

            return run_find(settings, args)
        if args.command in ("echo", "get", "move"):
            from pypacs import retrievecmd

            if args.command == "echo":
                return retrievecmd.run_echo(settings, args)
            if args.command == "get":
                return retrievecmd.run_get(settings, args)
            return retrievecmd.run_move(settings, args)
        if args.command == "import":
            paths = [Path(p) for p in args.paths]
            return _import(settings, paths, progress=not args.no_progress, create=args.create)
        return _check(settings, repair=not args.no_repair)
    except ConfigError as exc:
        print(f"pypacs: configuration error: {logs.redact(str(exc))}", file=sys.stderr)
        return 2
    except PypacsError as exc:
        print(f"pypacs: {logs.redact(str(exc))}", file=sys.stderr)
        status: int = getattr(exc, "exit_status", 1)  # 2: no archive, a port in use
        return status
    except KeyboardInterrupt:
        return 130


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    yield Path(folder) / name
        else:
            yield path


def counted(number: int, singular: str, plural: str = "") -> str:
    """``1 match``, ``2 matches``, ``0 matches``: a count with its noun agreeing."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _import(settings: Settings, paths: list[Path], *, progress: bool, create: bool) -> int:
    from tqdm import tqdm

    from pypacs.server import archive_location, open_archive

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"pypacs: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = list(_files(paths))
    archive = open_archive(
        settings,
        create=create or archive_location(settings).explicit,
        announce=print,
        hint=", or give --create to make a new one there",
    )
    counts: Counter[str] = Counter()
    rejected: list[tuple[Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    # What a file that is not an instance counts as, by InvalidInstance.kind.
    skips = {"not-dicom": "skipped", "dicomdir": "dicomdir"}

    def one(path: Path) -> tuple[Path, str, str]:
        try:
            return path, archive.store_file(path).outcome.value, ""
        except InvalidInstance as exc:
            return path, skips.get(exc.kind, "rejected"), exc.reason
        except PypacsError as exc:
            return path, "rejected", str(exc)

    try:
        with (
            ThreadPoolExecutor(max_workers=4) as pool,
            tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar,
        ):
            for path, outcome, reason in pool.map(one, files):
                counts[outcome] += 1
                if outcome == "rejected":
                    rejected.append((path, reason))
                elif outcome in ("skipped", "dicomdir"):
                    skipped.append((path, reason))
                bar.update()
    finally:
        archive.close()
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    for path, reason in rejected:
        print(f"rejected {path}: {reason}")
    print(
        f"imported {counts['stored'] + counts['replaced']}, already present {counts['duplicate']}, "
        f"rejected {counts['rejected']}, skipped (not DICOM) {counts['skipped']}, "
        f"skipped (DICOMDIR) {counts['dicomdir']}"
    )
    return 1 if rejected else 0


def _check(settings: Settings, *, repair: bool) -> int:
    from pypacs.archive.check import check
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
    print(
        f"{counted(report.blobs, 'blob')} checked: {len(report.reindexed)} re-indexed, "
        f"{len(report.missing)} missing, {len(report.unreadable)} not indexable"
    )
    return 0 if not (report.missing or report.unreadable) else 1
