"""The key table: each Query/Retrieve key once, with its level, requirement and column.

PS3.4 C.6.1.1 (Patient Root), C.6.2.1 (Study Root) and C.6.3.1 (Patient/Study Only) list
the unique (U), required (R) and optional (O) keys of each level. Tags and VRs come from
pydicom's data dictionary, so this table cannot disagree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pydicom.datadict import dictionary_VR, tag_for_keyword

from pypacs.model.levels import InformationModel, Level


@dataclass(frozen=True)
class Key:
    """One Query/Retrieve key.

    ``level`` is the information entity the attribute belongs to; ``requirement`` is its
    type (U, R or O) at that level in the Patient Root model. ``column`` names the typed,
    indexed column that holds it, or is ``None`` when the key is matched on stored attributes.
    ``derived`` marks attributes the archive computes (counts, modalities in study).
    """

    keyword: str
    level: Level
    requirement: str
    column: str | None = None
    derived: bool = False

    @cached_property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        if tag is None:  # pragma: no cover - guarded by the table test
            raise KeyError(self.keyword)
        return tag

    @cached_property
    def vr(self) -> str:
        return dictionary_VR(self.tag)

    @cached_property
    def match_column(self) -> str | None:
        """The column matching reads: a normalised form for PN (upper-cased alphabetic
        group) and TM (HHMMSS.FFFFFF), the value column otherwise."""
        if self.column is None or self.derived:
            return self.column
        if self.vr == "PN":
            return self.column + "_ci"
        if self.vr == "TM":
            return self.column + "_norm"
        return self.column

    def requirement_in(self, model: InformationModel) -> str:
        """The key's type in ``model`` (PS3.4 C.6.2.1: in Study Root the patient's unique
        key is only required, since patients are not a level of their own there)."""
        if model is InformationModel.STUDY_ROOT and self.level is Level.PATIENT:
            return "R" if self.requirement == "U" else self.requirement
        return self.requirement


KEYS: tuple[Key, ...] = (
    # Patient level, PS3.4 Table C.6-1
    Key("PatientName", Level.PATIENT, "R", "patient_name"),
    Key("PatientID", Level.PATIENT, "U", "patient_id"),
    Key("IssuerOfPatientID", Level.PATIENT, "O", "issuer_of_patient_id"),
    Key("PatientBirthDate", Level.PATIENT, "O", "patient_birth_date"),
    Key("PatientSex", Level.PATIENT, "O", "patient_sex"),
    Key("NumberOfPatientRelatedStudies", Level.PATIENT, "O", "num_studies", derived=True),
    Key("NumberOfPatientRelatedSeries", Level.PATIENT, "O", "num_series", derived=True),
    Key("NumberOfPatientRelatedInstances", Level.PATIENT, "O", "num_instances", derived=True),
    # Study level, PS3.4 Table C.6-2
    Key("StudyInstanceUID", Level.STUDY, "U", "study_instance_uid"),
    Key("StudyDate", Level.STUDY, "R", "study_date"),
    Key("StudyTime", Level.STUDY, "R", "study_time"),
    Key("AccessionNumber", Level.STUDY, "R", "accession_number"),
    Key("StudyID", Level.STUDY, "R", "study_id"),
    Key("ReferringPhysicianName", Level.STUDY, "O", "referring_physician_name"),
    Key("StudyDescription", Level.STUDY, "O", "study_description"),
    Key("ModalitiesInStudy", Level.STUDY, "O", "modalities_in_study", derived=True),
    Key("SOPClassesInStudy", Level.STUDY, "O", "sop_classes_in_study", derived=True),
    Key("NumberOfStudyRelatedSeries", Level.STUDY, "O", "num_series", derived=True),
    Key("NumberOfStudyRelatedInstances", Level.STUDY, "O", "num_instances", derived=True),
    # Series level, PS3.4 Table C.6-3
    Key("SeriesInstanceUID", Level.SERIES, "U", "series_instance_uid"),
    Key("Modality", Level.SERIES, "R", "modality"),
    Key("SeriesNumber", Level.SERIES, "R", "series_number"),
    Key("SeriesDescription", Level.SERIES, "O", "series_description"),
    Key("BodyPartExamined", Level.SERIES, "O", "body_part_examined"),
    Key("InstitutionName", Level.SERIES, "O", "institution_name"),
    Key("StationName", Level.SERIES, "O", "station_name"),
    Key("NumberOfSeriesRelatedInstances", Level.SERIES, "O", "num_instances", derived=True),
    # Composite object instance level, PS3.4 Table C.6-4
    Key("SOPInstanceUID", Level.IMAGE, "U", "sop_instance_uid"),
    Key("InstanceNumber", Level.IMAGE, "R", "instance_number"),
    Key("SOPClassUID", Level.IMAGE, "O", "sop_class_uid"),
)

KEYS_BY_KEYWORD: dict[str, Key] = {key.keyword: key for key in KEYS}
_KEYS_BY_TAG: dict[int, Key] = {key.tag: key for key in KEYS}


def keys_at(level: Level) -> tuple[Key, ...]:
    """The keys of one level, in table order."""
    return tuple(key for key in KEYS if key.level is level)


def unique_key(level: Level) -> Key:
    """The unique key of a level (PS3.4 C.2.2.1.1)."""
    (key,) = (k for k in keys_at(level) if k.requirement == "U")
    return key


def key_for_tag(tag: int) -> Key | None:
    return _KEYS_BY_TAG.get(tag)
