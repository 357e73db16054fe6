"""``pypacs find``: keys from the command line, a C-FIND, results as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from pypacs.cli.counts import counted
from pypacs.cli.flags import (
    Subparsers,
    add_calling_ae,
    add_model_flags,
    add_remote,
    add_setting_flags,
    remote_from,
)
from pypacs.cli.keys import QUERY_RETRIEVE_LEVEL, build_identifier, parse_key
from pypacs.config import Settings
from pypacs.model.levels import InformationModel
from pypacs.model.status import Category, Status, category
from pypacs.net.scu import find
from pypacs.remote.registry import RemoteError


def register(subparsers: Subparsers) -> None:
    """Add ``find``."""
    parser = subparsers.add_parser("find", help="C-FIND on a remote archive, like DCMTK's findscu")
    add_remote(parser)
    add_model_flags(parser)
    parser.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="a key by keyword or gggg,eeee; no value: return it",
    )
    parser.add_argument(
        "--relational",
        action="store_true",
        help="ask for relational queries (extended negotiation)",
    )
    parser.add_argument("--json", action="store_true", help="print DICOM JSON, one object a line")
    add_setting_flags(parser, ("logging",))
    add_calling_ae(parser)
    parser.set_defaults(run=run)


def _cell(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    if elem.VR == "SQ":
        return f"<{counted(len(elem.value), 'item')}>"
    value = elem.value
    return (
        "\\".join(str(v) for v in value)
        if isinstance(value, list | tuple) or elem.VM > 1
        else str(value)
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: 0 success, 1 a failure status from the remote, 2 cannot ask."""
    remote = remote_from(settings, args.remote)
    model = InformationModel(args.model or "STUDY_ROOT")
    level = args.level or ("PATIENT" if model is not InformationModel.STUDY_ROOT else "STUDY")
    identifier = build_identifier(args.key, level.upper())
    tags = [
        t for t in dict.fromkeys(parse_key(k)[0] for k in args.key) if t != QUERY_RETRIEVE_LEVEL
    ]
    calling = settings.server.ae_title
    tls = settings.tls_options()
    rows: list[Dataset] = []
    final = None
    count = 0
    try:
        for result in find(remote, calling, model, identifier, relational=args.relational, tls=tls):
            if result.identifier is not None and category(result.status) is Category.PENDING:
                count += 1
                if args.json:
                    print(json.dumps(result.identifier.to_json_dict(), ensure_ascii=False))
                else:
                    rows.append(result.identifier)
            else:
                final = result
    except RemoteError as exc:
        print(f"pypacs: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        headers = [keyword_for_tag(t) or f"{t >> 16:04X},{t & 0xFFFF:04X}" for t in tags]
        table = [[_cell(r, t) for t in tags] for r in rows]
        widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    status = final.status if final is not None else None
    if status == Status.SUCCESS:
        print(counted(count, "match", "matches"), file=sys.stderr)
        return 0
    comment = f": {final.error_comment}" if final is not None and final.error_comment else ""
    shown = f"0x{status:04X}" if status is not None else "none"
    print(f"pypacs: C-FIND ended with status {shown}{comment}", file=sys.stderr)
    return 1
