"""Transfer syntax facts the doors share: which may have lost information (PS3.5 A.4, 8.2)
and the media types of compressed pixel data (PS3.18 Table 8.7.3-5)."""

from __future__ import annotations

from collections.abc import Mapping

from pydicom import uid as ts

# PS3.18 Table 8.7.3-5: media type of compressed pixel data → its transfer syntaxes,
# the default (used when the media type names none) first.
COMPRESSED_MEDIA: Mapping[str, tuple[str, ...]] = {
    "image/jpeg": (
        ts.JPEGLosslessSV1,
        ts.JPEGBaseline8Bit,
        ts.JPEGExtended12Bit,
        ts.JPEGLossless,
    ),
    "image/dicom-rle": (ts.RLELossless,),
    "image/jls": (ts.JPEGLSLossless, ts.JPEGLSNearLossless),
    "image/jp2": (ts.JPEG2000Lossless, ts.JPEG2000),
    "image/jpx": (ts.JPEG2000MCLossless, ts.JPEG2000MC),
    "image/jphc": (ts.HTJ2KLossless, ts.HTJ2KLosslessRPCL, ts.HTJ2K),
    "video/mpeg": (ts.MPEG2MPML, ts.MPEG2MPHL),
    "video/mp4": (
        ts.MPEG4HP41,
        ts.MPEG4HP41BD,
        ts.MPEG4HP422D,
        ts.MPEG4HP423D,
        ts.MPEG4HP42STEREO,
        ts.HEVCMP51,
        ts.HEVCM10P51,
    ),
}
MEDIA_OF_SYNTAX: Mapping[str, str] = {
    syntax: media for media, syntaxes in COMPRESSED_MEDIA.items() for syntax in syntaxes
}

# Syntaxes whose pixel data may have lost information (PS3.5 A.4, 8.2): every video syntax
# and the lossy image ones.
LOSSY: frozenset[str] = frozenset(
    {
        ts.JPEGBaseline8Bit,
        ts.JPEGExtended12Bit,
        ts.JPEGLSNearLossless,
        ts.JPEG2000,
        ts.JPEG2000MC,
        ts.HTJ2K,
        *(s for s in MEDIA_OF_SYNTAX if MEDIA_OF_SYNTAX[s].startswith("video/")),
    }
)
