"""The entities the retrieve services name by UID: path parameters → an EntityRef (one
rule for path UIDs), their URLs, and the look-ups every WADO resource starts with
(PS3.18 10.4.1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from io import BytesIO
from typing import TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from starlette.requests import Request

from pypacs.archive import Archive, StoredInstance
from pypacs.archive.framereader import StoredFrames
from pypacs.archive.pixels import normalise_encapsulation
from pypacs.errors import StoreError
from pypacs.model.uid import is_acceptable_uid
from pypacs.query.entity import EntityRef
from pypacs.web.http.errors import bad_parameter, not_found
from pypacs.web.http.urls import public_url

T = TypeVar("T")


def path_uid(value: str, name: str) -> str:
    """A UID from the request path, by the rule of every door (model/uid.py).

    Raises:
        HttpProblem: 400 naming the path segment, when ``value`` is not a UID.
    """
    if not is_acceptable_uid(value):
        raise bad_parameter(name, f"{name} is not a UID: {value!r}")
    return value


def entity_of(request: Request) -> EntityRef:
    """The entity the path names; 400 naming the path segment whose UID is malformed."""
    params = request.path_params
    uids = {
        name: path_uid(params[name], name) if name in params else None
        for name in ("study", "series", "instance")
    }
    study = uids["study"]
    assert study is not None  # every route naming an entity names a study
    return EntityRef(study, uids["series"], uids["instance"])


def path_of(entity: EntityRef) -> str:
    """The entity's path under the DICOMweb root (PS3.18 10.4.1.1)."""
    path = f"/studies/{entity.study}"
    if entity.series is not None:
        path += f"/series/{entity.series}"
    if entity.instance is not None:
        path += f"/instances/{entity.instance}"
    return path


def service_url(request: Request, base: str) -> str:
    """The absolute URL of the DICOMweb service root (PS3.18 8.2), at the public address."""
    return public_url(request, base)


def entered(manager: AbstractContextManager[T]) -> tuple[T, ExitStack]:
    """Enter ``manager`` now and leave it when the returned stack is closed (which may
    happen in another thread, after a response has been streamed)."""
    stack = ExitStack()
    value = stack.enter_context(manager)
    return value, stack


def locate(archive: Archive, entity: EntityRef) -> StoredInstance:
    """The one stored instance an instance entity names.

    Raises:
        NotFound: 404 when the archive does not hold it.
    """
    return archive.locate(entity)


def middle(archive: Archive, entity: EntityRef) -> tuple[EntityRef, StoredInstance]:
    """The instance a thumbnail shows for a series: the middle one in arrival order; for a
    study, that of its first series.

    Raises:
        HttpProblem: 404 when the archive holds nothing under the entity.
    """
    if entity.series is None:
        with archive.attributes(entity.query()) as attributes:
            first = next(attributes, None)
        if first is None:
            raise not_found(f"no {entity}")
        entity = EntityRef(entity.study, first.series_instance_uid)
    with archive.retrieve(entity.query()) as retrieval:
        instances: Iterator[StoredInstance] = retrieval.instances
        for _ in range(retrieval.count // 2):
            next(instances)
        stored = next(instances, None)
    if stored is None:
        raise not_found(f"no {entity}")
    return EntityRef(entity.study, entity.series, stored.sop_instance_uid), stored


def load(archive: Archive, stored: StoredInstance) -> Dataset:
    """The stored instance parsed (pixel data included, nothing decoded).

    Raises:
        StoreError: the blob cannot be read or does not parse.
    """
    data = archive.read_instance(stored)
    try:
        return dcmread(BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"stored {stored.sop_instance_uid} does not parse: {exc}") from exc


def open_pixels(archive: Archive, stored: StoredInstance) -> StoredFrames:
    """The stored instance's header, its frames read one at a time where they lie
    (archive/framereader.py): for what needs the header and a few frames; close it after.

    Raises:
        StoreError: the blob cannot be read or its header does not parse.
    """
    return StoredFrames(
        archive.open_instance(stored), stored.transfer_syntax_uid, stored.sop_instance_uid
    )


def load_pixels(archive: Archive, stored: StoredInstance) -> Dataset:
    """``load``, its compressed frames re-encapsulated one fragment each, where they can be
    found whatever the offset table says (archive/pixels.py): ready to take frames from.

    Raises:
        StoreError: the blob cannot be read or does not parse.
        TranscodeError: the frames Number of Frames gives cannot be found.
    """
    ds = load(archive, stored)
    normalise_encapsulation(ds, stored.transfer_syntax_uid)
    return ds
