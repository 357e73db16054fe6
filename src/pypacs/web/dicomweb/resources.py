"""The entities the retrieve services name by UID: path parameters → a retrieve Query,
their URLs, and the look-ups every WADO resource starts with (PS3.18 10.4.1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from io import BytesIO
from typing import TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from starlette.requests import Request

from pypacs.archive import Archive, StoredInstance
from pypacs.archive.pixels import normalise_encapsulation
from pypacs.errors import StoreError
from pypacs.model.levels import InformationModel, Level
from pypacs.model.uid import is_acceptable_uid
from pypacs.query.from_dimse import parse_retrieve
from pypacs.query.types import Query
from pypacs.web.http.errors import bad_parameter, not_found
from pypacs.web.http.urls import public_url

T = TypeVar("T")


@dataclass(frozen=True)
class Entity:
    """A study, a series of it, or an instance of that series."""

    study: str
    series: str | None = None
    instance: str | None = None

    @property
    def level(self) -> Level:
        if self.instance is not None:
            return Level.IMAGE
        return Level.SERIES if self.series is not None else Level.STUDY

    def query(self) -> Query:
        """The retrieve identifier naming this entity (PS3.4 C.4.2.2.1, Study Root)."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = self.level.value
        identifier.StudyInstanceUID = self.study
        if self.series is not None:
            identifier.SeriesInstanceUID = self.series
        if self.instance is not None:
            identifier.SOPInstanceUID = self.instance
        return parse_retrieve(identifier, InformationModel.STUDY_ROOT, relational=False)

    @property
    def path(self) -> str:
        path = f"/studies/{self.study}"
        if self.series is not None:
            path += f"/series/{self.series}"
        if self.instance is not None:
            path += f"/instances/{self.instance}"
        return path

    def __str__(self) -> str:
        if self.instance is not None:
            return f"instance {self.instance} of series {self.series} of study {self.study}"
        if self.series is not None:
            return f"series {self.series} of study {self.study}"
        return f"study {self.study}"


def entity_of(request: Request) -> Entity:
    """The entity the path names; 400 naming the path segment whose UID is malformed."""
    uids: dict[str, str | None] = {}
    for name in ("study", "series", "instance"):
        value = request.path_params.get(name)
        if value is not None and not is_acceptable_uid(value):
            raise bad_parameter(name, f"{value!r} is not a UID (PS3.5 9.1)")
        uids[name] = value
    study = uids["study"]
    assert study is not None  # every WADO-RS route names a study
    return Entity(study, uids["series"], uids["instance"])


def service_url(request: Request, base: str) -> str:
    """The absolute URL of the DICOMweb service root (PS3.18 8.2), at the public address."""
    return public_url(request, base)


def entered(manager: AbstractContextManager[T]) -> tuple[T, ExitStack]:
    """Enter ``manager`` now and leave it when the returned stack is closed (which may
    happen in another thread, after a response has been streamed)."""
    stack = ExitStack()
    value = stack.enter_context(manager)
    return value, stack


def locate(archive: Archive, entity: Entity) -> StoredInstance:
    """The one stored instance an instance entity names.

    Raises:
        HttpProblem: 404 when the archive does not hold it.
    """
    with archive.retrieve(entity.query()) as retrieval:
        stored = next(retrieval.instances, None)
    if stored is None:
        raise not_found(f"no {entity}")
    return stored


def middle(archive: Archive, entity: Entity) -> tuple[Entity, StoredInstance]:
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
        entity = Entity(entity.study, first.series_instance_uid)
    with archive.retrieve(entity.query()) as retrieval:
        instances: Iterator[StoredInstance] = retrieval.instances
        for _ in range(retrieval.count // 2):
            next(instances)
        stored = next(instances, None)
    if stored is None:
        raise not_found(f"no {entity}")
    return Entity(entity.study, entity.series, stored.sop_instance_uid), stored


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
