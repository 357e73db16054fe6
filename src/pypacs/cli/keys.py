"""``-k KEY[=VALUE]`` on the command line: a keyword or tag, and the identifier they make."""

from __future__ import annotations

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from pypacs.errors import ConfigError

QUERY_RETRIEVE_LEVEL = 0x00080052


def parse_key(text: str) -> tuple[int, str]:
    """``PatientName=SMI*``, ``0010,0010=…`` or ``(0010,0010)`` → (tag, value).

    Raises:
        ConfigError: not a known keyword or tag.
    """
    name, _, value = text.partition("=")
    name = name.strip().strip("()")
    tag: int | None
    if "," in name:
        group, _, element = name.partition(",")
        try:
            tag = (int(group, 16) << 16) | int(element, 16)
        except ValueError:
            tag = None
    else:
        tag = tag_for_keyword(name)
    if tag is None:
        raise ConfigError(f"-k {text!r}: not a DICOM keyword or gggg,eeee tag")
    return tag, value


def build_identifier(keys: list[str], level: str) -> Dataset:
    """The identifier of ``-k`` keys at ``level`` (a ``QueryRetrieveLevel`` key overrides it).

    Raises:
        ConfigError: a key that is not a known keyword or tag.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for text in keys:
        tag, value = parse_key(text)
        if tag == QUERY_RETRIEVE_LEVEL:
            ds.QueryRetrieveLevel = value
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        ds.add_new(tag, vr, value or None)
        if value and not value.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"
    return ds
