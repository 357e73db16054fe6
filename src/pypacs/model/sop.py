"""SOP classes and transfer syntaxes pypacs serves (PS3.4 Annexes B and C, PS3.5 Annex A)."""

from __future__ import annotations

from collections.abc import Collection

from pydicom import uid
from pydicom._uid_dict import UID_dictionary

from pypacs.model.levels import InformationModel

# The order is the acceptor's preference when an SCU proposes several syntaxes in one
# presentation context: compressed first, since what arrives is stored as it arrives.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.RLELossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
)


def _storage_classes() -> frozenset[str]:
    # PS3.4 B.5: the storage SOP classes, retired ones included (old archives are full of
    # them); storage commitment and management, and DICOMDIR media, are other services.
    return frozenset(
        key
        for key, (name, kind, *_) in UID_dictionary.items()
        if kind == "SOP Class"
        and "Storage" in name
        and "Commitment" not in name
        and "Management" not in name
        and key != "1.2.840.10008.1.3.10"
    )


STORAGE_SOP_CLASSES: frozenset[str] = _storage_classes()

# PS3.4 B.5: standard storage SOP classes live under this root; PS3.5 9.1: anything outside
# the standard's root 1.2.840.10008 is private.
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
_STANDARD_ROOT = "1.2.840.10008."


def is_unknown_storage_class(sop_class: str, known: Collection[str]) -> bool:
    """A SOP class to take as storage though no list names it: private, or a standard
    storage class newer than the lists."""
    if sop_class in known:
        return False
    return sop_class.startswith(_STORAGE_ROOT) or not sop_class.startswith(_STANDARD_ROOT)


# PS3.4 Annex C.6 (and B.5): the Query/Retrieve SOP classes, by information model.
QR_FIND = {
    "1.2.840.10008.5.1.4.1.2.1.1": InformationModel.PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.1": InformationModel.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.1": InformationModel.PATIENT_STUDY_ONLY,  # retired
}
QR_MOVE = {
    "1.2.840.10008.5.1.4.1.2.1.2": InformationModel.PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": InformationModel.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.2": InformationModel.PATIENT_STUDY_ONLY,
}
QR_GET = {
    "1.2.840.10008.5.1.4.1.2.1.3": InformationModel.PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": InformationModel.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.3": InformationModel.PATIENT_STUDY_ONLY,
}

# Transfer syntaxes for Query/Retrieve messages (identifiers are small: no compression).
QR_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
)


# What a C-GET SCU proposes for the C-STORE sub-operations it receives (PS3.4 C.4.3): one
# context per class, and PS3.8 9.3.2.2 allows 128 in all, so not every storage class fits.
# These are the classes clinical archives hold, by pydicom keyword, images first.
_COMMON_STORAGE = """
CTImageStorage EnhancedCTImageStorage LegacyConvertedEnhancedCTImageStorage MRImageStorage
EnhancedMRImageStorage EnhancedMRColorImageStorage LegacyConvertedEnhancedMRImageStorage
MRSpectroscopyStorage UltrasoundImageStorage UltrasoundMultiFrameImageStorage
EnhancedUSVolumeStorage ComputedRadiographyImageStorage DigitalXRayImageStorageForPresentation
DigitalXRayImageStorageForProcessing DigitalMammographyXRayImageStorageForPresentation
DigitalMammographyXRayImageStorageForProcessing DigitalIntraOralXRayImageStorageForPresentation
DigitalIntraOralXRayImageStorageForProcessing BreastTomosynthesisImageStorage
BreastProjectionXRayImageStorageForPresentation BreastProjectionXRayImageStorageForProcessing
XRayAngiographicImageStorage EnhancedXAImageStorage XRayRadiofluoroscopicImageStorage
EnhancedXRFImageStorage XRay3DAngiographicImageStorage XRay3DCraniofacialImageStorage
NuclearMedicineImageStorage PositronEmissionTomographyImageStorage EnhancedPETImageStorage
LegacyConvertedEnhancedPETImageStorage SecondaryCaptureImageStorage
MultiFrameSingleBitSecondaryCaptureImageStorage MultiFrameGrayscaleByteSecondaryCaptureImageStorage
MultiFrameGrayscaleWordSecondaryCaptureImageStorage MultiFrameTrueColorSecondaryCaptureImageStorage
IntravascularOpticalCoherenceTomographyImageStorageForPresentation
IntravascularOpticalCoherenceTomographyImageStorageForProcessing VLEndoscopicImageStorage
VideoEndoscopicImageStorage VLMicroscopicImageStorage VideoMicroscopicImageStorage
VLSlideCoordinatesMicroscopicImageStorage VLPhotographicImageStorage VideoPhotographicImageStorage
VLWholeSlideMicroscopyImageStorage DermoscopicPhotographyImageStorage
OphthalmicPhotography8BitImageStorage OphthalmicPhotography16BitImageStorage
OphthalmicTomographyImageStorage StereometricRelationshipStorage
WideFieldOphthalmicPhotographyStereographicProjectionImageStorage
WideFieldOphthalmicPhotography3DCoordinatesImageStorage
OphthalmicOpticalCoherenceTomographyEnFaceImageStorage
OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage OphthalmicThicknessMapStorage
CornealTopographyMapStorage OphthalmicVisualFieldStaticPerimetryMeasurementsStorage
OphthalmicAxialMeasurementsStorage IntraocularLensCalculationsStorage
MacularGridThicknessAndVolumeReportStorage LensometryMeasurementsStorage
AutorefractionMeasurementsStorage KeratometryMeasurementsStorage
SubjectiveRefractionMeasurementsStorage VisualAcuityMeasurementsStorage
SpectaclePrescriptionReportStorage RTImageStorage RTDoseStorage RTStructureSetStorage
RTPlanStorage RTIonPlanStorage RTBeamsTreatmentRecordStorage RTBrachyTreatmentRecordStorage
RTTreatmentSummaryRecordStorage RTIonBeamsTreatmentRecordStorage RTBeamsDeliveryInstructionStorage
SegmentationStorage SurfaceSegmentationStorage SpatialRegistrationStorage
DeformableSpatialRegistrationStorage SpatialFiducialsStorage RealWorldValueMappingStorage
RawDataStorage SurfaceScanMeshStorage SurfaceScanPointCloudStorage TractographyResultsStorage
GrayscaleSoftcopyPresentationStateStorage ColorSoftcopyPresentationStateStorage
PseudoColorSoftcopyPresentationStateStorage BlendingSoftcopyPresentationStateStorage
XAXRFGrayscaleSoftcopyPresentationStateStorage BasicStructuredDisplayStorage BasicTextSRStorage
EnhancedSRStorage ComprehensiveSRStorage Comprehensive3DSRStorage ExtensibleSRStorage
ProcedureLogStorage MammographyCADSRStorage ChestCADSRStorage ColonCADSRStorage
KeyObjectSelectionDocumentStorage XRayRadiationDoseSRStorage
RadiopharmaceuticalRadiationDoseSRStorage PatientRadiationDoseSRStorage
AcquisitionContextSRStorage SimplifiedAdultEchoSRStorage ImplantationPlanSRStorage
EncapsulatedPDFStorage EncapsulatedCDAStorage EncapsulatedSTLStorage EncapsulatedOBJStorage
EncapsulatedMTLStorage TwelveLeadECGWaveformStorage GeneralECGWaveformStorage
AmbulatoryECGWaveformStorage HemodynamicWaveformStorage CardiacElectrophysiologyWaveformStorage
BasicVoiceAudioWaveformStorage GeneralAudioWaveformStorage ArterialPulseWaveformStorage
RespiratoryWaveformStorage
"""
COMMON_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(getattr(uid, keyword)) for keyword in _COMMON_STORAGE.split()
)
