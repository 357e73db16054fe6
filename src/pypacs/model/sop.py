"""Transfer syntaxes pypacs accepts for storage (PS3.5 Section 10 and Annex A)."""

from __future__ import annotations

from pydicom import uid

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
