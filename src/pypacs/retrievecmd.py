"""`pypacs echo|get|move`: verify a remote; retrieve from it by C-GET or C-MOVE.

Exit status of get and move: 0 every sub-operation succeeded (also when nothing matched);
1 some failed or warned (final status Warning 0xB000, or Cancel); 2 a failure status, no
association, an aborted one, or wrong arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pypacs.cli import counted
from pypacs.config import SETTINGS, Settings
from pypacs.errors import ConfigError, InvalidInstance, StoreError
from pypacs.findcmd import build_identifier
from pypacs.model.levels import InformationModel
from pypacs.model.uid import is_acceptable_uid
from pypacs.net.options import RemoteAE
from pypacs.net.scu import RemoteError, RetrieveProgress, echo, get, move, parse_remote

_SUCCESS = 0x0000  # PS3.4 B.2.3, the C-STORE status we answer for an instance kept
# PS3.5 9.1: a UID is dot-separated numbers without leading zeros, 64 characters at most.


def run_echo(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: 0 the remote answered success, 2 it did not."""
    remote = _remote(settings, args.remote)
    _quiet_pynetdicom(settings)
    try:
        echo(remote, settings.net_options().ae_title)
    except RemoteError as exc:
        print(f"pypacs: {exc}", file=sys.stderr)
        return 2
    print(f"{remote.ae_title} at {remote.host}:{remote.port}: C-ECHO success")
    return 0


def run_move(settings: Settings, args: argparse.Namespace) -> int:
    """C-MOVE to ``--dest`` (default: our own AE title); exit status as above."""
    remote = _remote(settings, args.remote)
    model, identifier = _request(args)
    destination = _destination(args.dest or settings.net_options().ae_title)
    calling = settings.net_options().ae_title
    responses = move(remote, calling, model, identifier, destination)
    _quiet_pynetdicom(settings)
    return _report("C-MOVE", "moved", responses, _show_progress(args))


def run_get(settings: Settings, args: argparse.Namespace) -> int:
    """C-GET into our archive, or into ``--output``; exit status as above."""
    remote = _remote(settings, args.remote)
    model, identifier = _request(args)
    calling = settings.net_options().ae_title
    if args.output is not None:
        folder = _Folder(Path(args.output))
        _quiet_pynetdicom(settings)
        responses = get(remote, calling, model, identifier, folder.write)
        return _report("C-GET", "retrieved", responses, _show_progress(args))

    from pypacs.server import archive_location, open_archive

    archive = open_archive(
        settings,
        create=args.create or archive_location(settings).explicit,
        announce=print,
        hint=", give --create to make a new one there, or --output DIR to write files",
    )
    _quiet_pynetdicom(settings)  # after open_archive, which sets pynetdicom's level too
    present = 0

    def keep(data: bytes, sop_class: str, sop_instance: str) -> int:
        nonlocal present
        result = archive.store_instance(
            data, expected_sop_class=sop_class, expected_sop_instance=sop_instance
        )
        if result.outcome.value == "duplicate":
            present += 1
        return _SUCCESS

    try:
        responses = get(remote, calling, model, identifier, keep)
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
                f"SOP Instance UID {sop_instance[:24]!r} is invalid", "unparsable"
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
        return _SUCCESS


def _destination(ae_title: str) -> str:
    """Raises ConfigError unless ``ae_title`` passes the check declared for AE titles."""
    setting = next(s for s in SETTINGS if (s.section, s.key) == ("server", "ae_title"))
    expected = setting.check(ae_title) if setting.check is not None else None
    if expected is not None:
        raise ConfigError(f"--dest {ae_title!r}: expected {expected}")
    return ae_title


def _quiet_pynetdicom(settings: Settings) -> None:
    # A failure reaches the user as one line of ours; pynetdicom's log of the same event
    # ("TCP Initialisation Error", ...) would only repeat it, unless debugging.
    if settings[("logging", "level")] != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _remote(settings: Settings, text: str) -> RemoteAE:
    try:
        return parse_remote(text, settings.remotes)
    except RemoteError as exc:
        raise ConfigError(str(exc)) from exc


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


def _report(service: str, verb: str, responses: Iterator[RetrieveProgress], progress: bool) -> int:
    """Follow the responses with a progress bar; print the summary; the exit status."""
    from tqdm import tqdm

    final: RetrieveProgress | None = None
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


def _exit_status(service: str, final: RetrieveProgress) -> int:
    if final.category == "success":
        if not (final.failed or final.warning):
            return 0
        print(f"pypacs: {service}: {final.failed} failed, {final.warning} warning", file=sys.stderr)
        return 1
    comment = f": {final.error_comment}" if final.error_comment else ""
    print(
        f"pypacs: {service} ended with status 0x{final.status:04X} "
        f"({final.description or final.category}){comment}",
        file=sys.stderr,
    )
    return 2 if final.category == "failure" else 1
