"""`pypacs find`: keys from the command line, a C-FIND, results as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from pypacs.cli import counted
from pypacs.config import Settings
from pypacs.errors import ConfigError
from pypacs.model.levels import InformationModel
from pypacs.net.scu import RemoteError, find, parse_remote

_SUCCESS, _CANCEL = 0x0000, 0xFE00


def parse_key(text: str) -> tuple[int, str]:
    """``PatientName=SMI*``, ``0010,0010=…`` or ``(0010,0010)`` → (tag, value).

    Raises:
        ConfigError: not a known keyword or tag.
    """
    name, _, value = text.partition("=")
    name = name.strip().strip("()")
    tag: int | None
    if "," in name:
        group, _, element = name.partition(",")
        try:
            tag = (int(group, 16) << 16) | int(element, 16)
        except ValueError:
            tag = None
    else:
        tag = tag_for_keyword(name)
    if tag is None:
        raise ConfigError(f"-k {text!r}: not a DICOM keyword or gggg,eeee tag")
    return tag, value


def build_identifier(keys: list[str], level: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for text in keys:
        tag, value = parse_key(text)
        if tag == 0x00080052:
            ds.QueryRetrieveLevel = value
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        ds.add_new(tag, vr, value or None)
        if value and not value.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


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


def run_find(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: 0 success, 1 a failure status from the remote, 2 cannot ask."""
    try:
        remote = parse_remote(args.remote, settings.remotes)
    except RemoteError as exc:
        raise ConfigError(str(exc)) from exc
    model = InformationModel(args.model or "STUDY_ROOT")
    level = args.level or ("PATIENT" if model is not InformationModel.STUDY_ROOT else "STUDY")
    identifier = build_identifier(args.key, level.upper())
    tags = [t for t in dict.fromkeys(parse_key(k)[0] for k in args.key) if t != 0x00080052]
    calling = settings.net_options().ae_title
    rows: list[Dataset] = []
    final = None
    count = 0
    try:
        for result in find(remote, calling, model, identifier, relational=args.relational):
            if result.identifier is not None and result.status in (0xFF00, 0xFF01):
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
    if status == _SUCCESS:
        print(counted(count, "match", "matches"), file=sys.stderr)
        return 0
    comment = f": {final.error_comment}" if final is not None and final.error_comment else ""
    shown = f"0x{status:04X}" if status is not None else "none"
    print(f"pypacs: C-FIND ended with status {shown}{comment}", file=sys.stderr)
    return 1
