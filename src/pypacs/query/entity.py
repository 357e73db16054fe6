"""One way to name an entity by its UIDs: a study, a series of it, or an instance of that
series, and the retrieve identifier that names it (PS3.4 C.4.2.2.1, Study Root)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from pypacs.model.levels import InformationModel, Level
from pypacs.query.from_dimse import parse_retrieve
from pypacs.query.types import Query


@dataclass(frozen=True)
class EntityRef:
    """A study, a series of it, or an instance of that series, named by UIDs."""

    study: str
    series: str | None = None
    instance: str | None = None

    def __post_init__(self) -> None:
        # PS3.4 C.4.2.2.1 (Study Root): each level below STUDY names its parents too.
        if self.instance is not None and self.series is None:
            raise ValueError("an instance is named with its series")

    @property
    def level(self) -> Level:
        if self.instance is not None:
            return Level.IMAGE
        return Level.SERIES if self.series is not None else Level.STUDY

    def query(self) -> Query:
        """The retrieve identifier naming this entity (PS3.4 C.4.2.2.1, Study Root).

        Raises:
            InvalidQuery: a UID is malformed (model/uid.py).
        """
        identifier = Dataset()
        identifier.QueryRetrieveLevel = self.level.value
        identifier.StudyInstanceUID = self.study
        if self.series is not None:
            identifier.SeriesInstanceUID = self.series
        if self.instance is not None:
            identifier.SOPInstanceUID = self.instance
        return parse_retrieve(identifier, InformationModel.STUDY_ROOT, relational=False)

    def __str__(self) -> str:
        if self.instance is not None:
            return f"instance {self.instance} of series {self.series} of study {self.study}"
        if self.series is not None:
            return f"series {self.series} of study {self.study}"
        return f"study {self.study}"
