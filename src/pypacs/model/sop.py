"""SOP classes and transfer syntaxes pypacs serves (PS3.4 Annexes B and C, PS3.5 Annex A)."""

from __future__ import annotations

from pydicom import uid

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
