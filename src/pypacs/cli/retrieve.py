"""``pypacs echo|get|move``: verify a remote; retrieve from it by C-GET or C-MOVE.

Exit status of get and move: 0 every sub-operation succeeded (also when nothing matched);
1 some failed or warned (final status Warning 0xB000, or Cancel); 2 a failure status, no
association, an aborted one, or wrong arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pypacs.cli.counts import counted
from pypacs.cli.flags import (
    CREATE_HELP,
    Subparsers,
    add_calling_ae,
    add_model_flags,
    add_remote,
    add_setting_flags,
    remote_from,
)
from pypacs.cli.keys import build_identifier
from pypacs.config import Settings, setting
from pypacs.errors import ConfigError, InvalidInstance, InvalidKind, StoreError
from pypacs.model.levels import InformationModel
from pypacs.model.status import Category, Status
from pypacs.model.uid import is_acceptable_uid
from pypacs.net.scu import echo, get, move
from pypacs.remote.export import Progress
from pypacs.remote.registry import RemoteError

# PS3.4 B.2.3: the C-STORE status answered for an instance kept.
_KEPT = Status.SUCCESS
_EXIT_STATUS = (
    "exit status: 0 every sub-operation succeeded (also when nothing matched); "
    "1 some failed or ended with a warning (final status 0xB000 or a cancel); "
    "2 the remote answered with a failure status, refused, aborted or could not be "
    "reached, or the arguments are wrong"
)


def register(subparsers: Subparsers) -> None:
    """Add ``echo``, ``get`` and ``move``."""
    echo_ = subparsers.add_parser(
        "echo",
        help="C-ECHO a remote archive",
        epilog="exit status: 0 the remote answered success; 2 it refused or did not answer",
    )
    add_remote(echo_)
    add_setting_flags(echo_, ("logging",))
    add_calling_ae(echo_)
    echo_.set_defaults(run=run)

    get_ = subparsers.add_parser(
        "get",
        help="C-GET from a remote archive into ours (or --output DIR), like DCMTK's getscu",
        epilog=_EXIT_STATUS,
    )
    _add_retrieve_arguments(get_)
    get_.add_argument(
        "--output",
        metavar="DIR",
        help="write each instance as DIR/<SOP Instance UID>.dcm instead of archiving it",
    )
    get_.add_argument("--create", action="store_true", help=CREATE_HELP)
    add_setting_flags(get_, ("storage", "database", "logging"))
    add_calling_ae(get_)
    get_.set_defaults(run=run)

    move_ = subparsers.add_parser(
        "move",
        help="C-MOVE from a remote archive to an AE (default: ours), like DCMTK's movescu",
        epilog=_EXIT_STATUS,
    )
    _add_retrieve_arguments(move_)
    move_.add_argument(
        "--dest",
        metavar="AE",
        help="move destination AE title, known to the remote (default: [server] ae_title)",
    )
    add_setting_flags(move_, ("logging",))
    add_calling_ae(move_)
    move_.set_defaults(run=run)


def _add_retrieve_arguments(parser: argparse.ArgumentParser) -> None:
    add_remote(parser)
    add_model_flags(parser)
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


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``echo``, ``get`` or ``move``; the exit status as above."""
    if args.command == "echo":
        return _echo(settings, args)
    if args.command == "get":
        return _get(settings, args)
    return _move(settings, args)


def _echo(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: 0 the remote answered success, 2 it did not."""
    remote = remote_from(settings, args.remote)
    try:
        echo(remote, settings.server.ae_title, tls=settings.tls_options())
    except RemoteError as exc:
        print(f"pypacs: {exc}", file=sys.stderr)
        return 2
    print(f"{remote.ae_title} at {remote.host}:{remote.port}: C-ECHO success")
    return 0


def _move(settings: Settings, args: argparse.Namespace) -> int:
    """C-MOVE to ``--dest`` (default: our own AE title); exit status as above."""
    remote = remote_from(settings, args.remote)
    model, identifier = _request(args)
    destination = _destination(args.dest or settings.server.ae_title)
    calling = settings.server.ae_title
    responses = move(remote, calling, model, identifier, destination, tls=settings.tls_options())
    return _report("C-MOVE", "moved", responses, _show_progress(args))


def _get(settings: Settings, args: argparse.Namespace) -> int:
    """C-GET into our archive, or into ``--output``; exit status as above."""
    remote = remote_from(settings, args.remote)
    model, identifier = _request(args)
    calling = settings.server.ae_title
    if args.output is not None:
        folder = _Folder(Path(args.output))
        responses = get(
            remote, calling, model, identifier, folder.write, tls=settings.tls_options()
        )
        return _report("C-GET", "retrieved", responses, _show_progress(args))

    from pypacs.archive import Outcome
    from pypacs.server import archive_location, open_archive

    archive = open_archive(
        settings,
        create=args.create or archive_location(settings).explicit,
        announce=print,
        hint=", give --create to make a new one there, or --output DIR to write files",
    )
    present = 0

    def keep(data: bytes, sop_class: str, sop_instance: str) -> int:
        nonlocal present
        result = archive.store_instance(
            data, expected_sop_class=sop_class, expected_sop_instance=sop_instance
        )
        if result.outcome is Outcome.DUPLICATE:
            present += 1
        return _KEPT

    try:
        responses = get(remote, calling, model, identifier, keep, tls=settings.tls_options())
        status = _report("C-GET", "retrieved", responses, _show_progress(args))
    finally:
        archive.close()
    if present:
        were = "was" if present == 1 else "were"
        print(f"{present} of them {were} already in the archive")
    return status


class _Folder:
    """Received instances as Part 10 files named by their SOP Instance UID."""

    def __init__(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--output {path}: cannot create: {exc.strerror}") from exc
        self.path = path

    def write(self, data: bytes, sop_class: str, sop_instance: str) -> int:
        """Raises InvalidInstance for a UID that is not one; StoreError when writing fails."""
        # A peer's text becomes a file name only once it is known to be a UID.
        if not is_acceptable_uid(sop_instance):
            raise InvalidInstance(
                f"SOP Instance UID {sop_instance[:24]!r} is invalid", InvalidKind.UNPARSABLE
            )
        target = self.path / f"{sop_instance}.dcm"
        partial = self.path / f".{sop_instance}.dcm.partial"
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StoreError(f"cannot write {target.name}: {exc.strerror}") from exc
        return _KEPT


def _destination(ae_title: str) -> str:
    """Raises ConfigError unless ``ae_title`` passes the check declared for AE titles."""
    check = setting("server", "ae_title").check
    expected = check(ae_title) if check is not None else None
    if expected is not None:
        raise ConfigError(f"--dest {ae_title!r}: expected {expected}")
    return ae_title


def _request(args: argparse.Namespace) -> tuple[InformationModel, Dataset]:
    """The information model and the identifier from -P/-S/-O, -L and -k.

    Raises:
        ConfigError: an unknown key, a value its VR cannot hold, a level not in the model.
    """
    model = InformationModel(args.model or "STUDY_ROOT")
    default = "STUDY" if model is InformationModel.STUDY_ROOT else "PATIENT"
    try:
        identifier = build_identifier(args.key, (args.level or default).upper())
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, identifier)
    except (ValueError, OSError, struct.error) as exc:
        raise ConfigError(f"-k: {str(exc).splitlines()[0]}") from exc
    level = str(identifier.QueryRetrieveLevel)
    if level not in model.levels:
        levels = ", ".join(model.levels)
        raise ConfigError(f"level {level!r} is not one of {model}'s levels ({levels})")
    return model, identifier


def _show_progress(args: argparse.Namespace) -> bool:
    return bool(args.progress) or sys.stderr.isatty()


def _report(service: str, verb: str, responses: Iterator[Progress], progress: bool) -> int:
    """Follow the responses with a progress bar; print the summary; the exit status."""
    from tqdm import tqdm

    final: Progress | None = None
    try:
        with tqdm(unit="instance", disable=not progress, file=sys.stderr, desc=verb) as bar:
            for step in responses:
                if step.remaining is not None:
                    bar.total = step.done + step.remaining
                bar.set_postfix(failed=step.failed, warning=step.warning, refresh=False)
                bar.update(step.done - bar.n)
                final = step
    except RemoteError as exc:
        print(f"pypacs: {exc}", file=sys.stderr)
        return 2
    if final is None:
        print(f"pypacs: {service}: no response", file=sys.stderr)
        return 2
    total = final.done + (final.remaining or 0)
    print(
        f"{verb} {final.completed + final.warning} of {counted(total, 'instance')} "
        f"({final.failed} failed, {final.warning} warning)"
    )
    for uid in final.failed_uids:
        print(f"failed {uid}")
    return _exit_status(service, final)


def _exit_status(service: str, final: Progress) -> int:
    if final.category is Category.SUCCESS:
        if not (final.failed or final.warning):
            return 0
        print(f"pypacs: {service}: {final.failed} failed, {final.warning} warning", file=sys.stderr)
        return 1
    comment = f": {final.error_comment}" if final.error_comment else ""
    print(
        f"pypacs: {service} ended with status 0x{final.status:04X} "
        f"({final.description or final.category.value}){comment}",
        file=sys.stderr,
    )
    return 2 if final.category is Category.FAILURE else 1
