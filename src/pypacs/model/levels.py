"""Query/Retrieve levels and information models (PS3.4 C.3, C.6)."""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """The four Query/Retrieve levels, from the top of the hierarchy down (PS3.4 C.3)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return LEVEL_ORDER.index(self)

    @property
    def parent(self) -> Level:
        """The level above (PATIENT has none)."""
        if self is Level.PATIENT:
            raise ValueError("PATIENT is the top level")
        return LEVEL_ORDER[self.depth - 1]


LEVEL_ORDER: tuple[Level, ...] = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


class InformationModel(StrEnum):
    """The Query/Retrieve information models pypacs serves (PS3.4 C.6.1, C.6.2, C.6.3)."""

    PATIENT_ROOT = "PATIENT_ROOT"
    STUDY_ROOT = "STUDY_ROOT"
    PATIENT_STUDY_ONLY = "PATIENT_STUDY_ONLY"  # retired, still used by older systems

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels this model allows, top first."""
        if self is InformationModel.PATIENT_ROOT:
            return LEVEL_ORDER
        if self is InformationModel.STUDY_ROOT:
            return (Level.STUDY, Level.SERIES, Level.IMAGE)
        return (Level.PATIENT, Level.STUDY)
