"""WADO-RS metadata: the DICOM JSON of every instance under a study, series or instance,
from the index alone, never from an image file (PS3.18 Table 10.4.1-2, 10.4.3.3.2, F.2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from pydicom.uid import UID
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pypacs.archive import Archive
from pypacs.archive.metadata import InstanceAttributes
from pypacs.query.entity import EntityRef
from pypacs.web.dicomweb.jsonmerge import Member, Members, member
from pypacs.web.dicomweb.resources import entered, entity_of, service_url
from pypacs.web.http.errors import not_found
from pypacs.web.http.negotiate import JSON_TYPES, choose

_CHUNK = 64 * 1024
_ROWS = b"00280010"
_PIXEL_DATA = "7FE00010"
_AVAILABLE_SYNTAX = "00083002"  # Available Transfer Syntax UID, as QIDO-RS has it (10.6)


class _Splicer:
    """Instance objects as text: the instance's own members with its parents' and the
    attributes pypacs adds (bulk data URI, available transfer syntax) spliced in."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._parents: tuple[bytes, bytes, bytes] | None = None
        self._inserts: list[Member] = []

    def parents(self, attrs: InstanceAttributes) -> list[Member]:
        current = (attrs.patient, attrs.study, attrs.series)
        # The same bytes objects come for every instance of a series: cut them up once.
        if self._parents is None or any(
            a is not b for a, b in zip(current, self._parents, strict=True)
        ):
            self._parents = current
            self._inserts = sorted(m for text in current for m in Members(text).members())
        return self._inserts

    def extras(self, attrs: InstanceAttributes, own: Members | dict[str, Any]) -> list[Member]:
        extras = [member(_AVAILABLE_SYNTAX, {"vr": "UI", "Value": [attrs.transfer_syntax_uid]})]
        has_rows = _ROWS in own if isinstance(own, Members) else _ROWS.decode() in own
        if has_rows:
            # PS3.18 F.2.6: the pixel data is served at its bulk data URI, never inline.
            vr = "OB" if UID(attrs.transfer_syntax_uid).is_encapsulated else "OW"
            url = (
                f"{self.root}/studies/{attrs.study_instance_uid}/series/"
                f"{attrs.series_instance_uid}/instances/{attrs.sop_instance_uid}/bulkdata/"
                f"{_PIXEL_DATA}"
            )
            extras.append(member(_PIXEL_DATA, {"vr": vr, "BulkDataURI": url}))
        return extras

    def __call__(self, attrs: InstanceAttributes) -> bytes:
        parents = self.parents(attrs)
        try:
            own = Members(attrs.instance)
        except ValueError:
            return self._parsed(attrs)
        inserts = sorted([*parents, *(e for e in self.extras(attrs, own) if e[0] not in own)])
        return own.with_members(inserts)

    def _parsed(self, attrs: InstanceAttributes) -> bytes:
        """The slow path, for stored text the splicer does not expect."""
        obj: dict[str, Any] = {}
        for text in (attrs.patient, attrs.study, attrs.series, attrs.instance):
            obj.update(json.loads(text))
        for key, text in self.extras(attrs, obj):
            obj.setdefault(key.decode(), json.loads(b"{" + text + b"}")[key.decode()])
        return json.dumps(dict(sorted(obj.items())), separators=(",", ":")).encode()


def _encoded(
    first: InstanceAttributes, rest: Iterator[InstanceAttributes], root: str, stack: ExitStack
) -> Iterator[bytes]:
    """The JSON array in chunks of about 64 KiB (one thread hop per chunk)."""
    splice = _Splicer(root)
    with stack:
        parts = [b"[", splice(first)]
        size = len(parts[1])
        for attrs in rest:
            text = splice(attrs)
            parts.append(b"," + text)
            size += len(text) + 1
            if size >= _CHUNK:
                yield b"".join(parts)
                parts, size = [], 0
        parts.append(b"]")
        yield b"".join(parts)


def metadata_endpoint(archive: Archive, base: str) -> Any:
    async def metadata(request: Request) -> Response:
        entity: EntityRef = entity_of(request)
        # PS3.18 Table 10.4.1-2: DICOM JSON (or XML, which pypacs does not write: 406).
        answer_type = choose(request, JSON_TYPES, "metadata")
        attributes, stack = await run_in_threadpool(entered, archive.attributes(entity.query()))
        try:
            first = await run_in_threadpool(next, attributes, None)
            if first is None:
                raise not_found(f"no {entity}")
        except BaseException:
            await run_in_threadpool(stack.close)
            raise
        chunks = _encoded(first, attributes, service_url(request, base), stack)
        return StreamingResponse(iterate_in_threadpool(chunks), media_type=answer_type)

    return metadata
