"""Which information entity an attribute belongs to, to split a header by level.

The split follows the modules of PS3.3: Patient (C.7.1.1) and Clinical Trial Subject
at the patient level; General Study (C.7.2.1) and Patient Study (C.7.2.2) at the study
level; General Series (C.7.3.1), Frame of Reference and General Equipment (C.7.5.1) at
the series level. Everything else is the instance's own.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from pypacs.model.levels import Level

_PATIENT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "QualityControlSubject",
    "StrainDescription",
    "StrainNomenclature",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "CountryOfResidence",
    "RegionOfResidence",
    "MilitaryRank",
    "BranchOfService",
    "PatientReligiousPreference",
    "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
)
_STUDY = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingService",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientSizeCodeSequence",
    "Occupation",
    "AdditionalPatientHistory",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "PatientSexNeutered",
    "SmokingStatus",
    "PregnancyStatus",
    "LastMenstrualDate",
    "MedicalAlerts",
    "Allergies",
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
)
_SERIES = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "Laterality",
    "SeriesDate",
    "SeriesTime",
    "PerformingPhysicianName",
    "ProtocolName",
    "SeriesDescription",
    "SeriesDescriptionCodeSequence",
    "OperatorsName",
    "ReferencedPerformedProcedureStepSequence",
    "RelatedSeriesSequence",
    "BodyPartExamined",
    "PatientPosition",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "RequestAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "SpatialResolution",
    "DateOfLastCalibration",
    "TimeOfLastCalibration",
    "ClinicalTrialCoordinatingCenterName",
    "ClinicalTrialSeriesID",
    "ClinicalTrialSeriesDescription",
)


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    return frozenset(t for t in (tag_for_keyword(k) for k in keywords) if t is not None)


_LEVEL_TAGS: dict[Level, frozenset[int]] = {
    Level.PATIENT: _tags(_PATIENT),
    Level.STUDY: _tags(_STUDY),
    Level.SERIES: _tags(_SERIES),
}


# Each tag's level at once (asked for every element of every instance received).
_LEVEL_OF: dict[int, Level] = {tag: level for level, tags in _LEVEL_TAGS.items() for tag in tags}


def level_of(tag: int) -> Level:
    """The information entity whose attribute set holds ``tag``."""
    return _LEVEL_OF.get(tag, Level.IMAGE)


# Values that are never kept in the index: pixel and other bulk data (PS3.18 calls them
# bulk data; PS3.4 C.6 never asks for them as keys).
BULK_DATA_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_DATA_THRESHOLD = 1024
