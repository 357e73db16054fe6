"""QIDO-RS query parameters → Query, through the same rules as a C-FIND identifier.

The parameters are turned into the identifier a C-FIND SCU would send for the same search
(PS3.18 8.3.4, 10.6.1.2), which ``from_dimse.parse_identifier`` then validates: one matching
engine, two front doors. The searches are relational (PS3.18 10.6.1.2: /series and
/instances search across studies) in the Study Root model; patient keys are study keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from pypacs.model.keys import key_for_tag
from pypacs.model.levels import InformationModel, Level
from pypacs.query import values
from pypacs.query.from_dimse import QUERY_RETRIEVE_LEVEL, parse_identifier
from pypacs.query.types import InvalidQuery, Query, QueryOptions, SortKey

RETRIEVE_URL_KEYWORD = "RetrieveURL"  # answered by the front door, which knows its URLs
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E

# PS3.18 10.6.3.3.1, Table 10.6.3-3 .. 10.6.3-5: what every match returns by default.
_STUDY_DEFAULTS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
_SERIES_DEFAULTS = (
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
_INSTANCE_DEFAULTS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
# pypacs' patient search (an extension: PS3.18 has no patient resource), as C-FIND's
# Patient Root PATIENT level returns it.
_PATIENT_DEFAULTS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)
_DEFAULTS = {Level.STUDY: _STUDY_DEFAULTS, Level.SERIES: _SERIES_DEFAULTS}
_DEFAULTS[Level.IMAGE] = _INSTANCE_DEFAULTS
_DEFAULTS[Level.PATIENT] = _PATIENT_DEFAULTS
# orderby and total are pypacs extensions (PS3.18 8.3.4 defines no order and no count).
_CONTROL = frozenset(
    {"limit", "offset", "includefield", "fuzzymatching", "emptyvaluematching"}
    | {"multiplevaluematching", "orderby", "total"}
)


@dataclass(frozen=True)
class QidoSearch:
    """A parsed search: the Query, and what the answer must say about the request."""

    query: Query
    # Warning header texts (PS3.18 8.3.4.2, 8.3.4.5): requested behaviour not performed.
    warnings: tuple[str, ...]
    # True when ``limit`` came from the server's default, not from the request.
    default_limit: bool
    # total=true: the number of matches, whatever limit and offset, is asked for.
    total: bool = False


def attribute_tag(name: str) -> int:
    """A QIDO {attributeID} (PS3.18 8.3.4.1): a keyword or eight hex digits.

    Raises:
        InvalidQuery: neither a keyword of the data dictionary nor a tag.
    """
    if _HEX_TAG.match(name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidQuery(f"{name!r} is neither a DICOM keyword nor a tag", parameter=name)
    return tag


def _vr(tag: int, name: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise InvalidQuery(
            f"{name!r} is not an attribute pypacs can search on (unknown or private)",
            parameter=name,
        ) from None
    return vr.split(" or ")[0]


# The largest limit or offset taken: the SQL integer every backend holds (PS3.18 8.3.4.4
# sets no bound; a larger one could not be answered anyway).
MAX_COUNT = 2**31 - 1


def _non_negative(name: str, text: str) -> int:
    # ASCII digits only, and few of them: int() takes other digits ("²") and refuses very
    # long texts, neither with an answer that names the parameter.
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_COUNT:
        shown = repr(text) if len(text) <= 24 else repr(text[:24]) + "..."
        raise InvalidQuery(
            f"{name} must be an integer from 0 to {MAX_COUNT}, not {shown}", parameter=name
        )
    return int(text)


def _boolean(name: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise InvalidQuery(f"{name} must be true or false, not {text!r}", parameter=name)
    return text == "true"


def parse_orderby(text: str, level: Level) -> tuple[SortKey, ...]:
    """``orderby=Key,-Key`` (a pypacs extension): keys with an index column at the searched
    level or above, "-" for descending.

    Raises:
        InvalidQuery: a key that is not one, has no column, or lives below ``level``.
    """
    order: list[SortKey] = []
    for part in (p.strip() for p in text.split(",")):
        name = part.removeprefix("-")
        if not name:
            raise InvalidQuery(f"orderby has an empty key: {text!r}", parameter="orderby")
        key = key_for_tag(_tag_named(name))
        if key is None or key.match_column is None or key.level.depth > level.depth:
            raise InvalidQuery(
                f"orderby: pypacs cannot order {level.value.lower()} matches by {name}",
                parameter="orderby",
            )
        order.append(SortKey(key.tag, key.level, descending=part.startswith("-")))
    return tuple(order)


def _tag_named(name: str) -> int:
    try:
        return attribute_tag(name)
    except InvalidQuery:
        raise InvalidQuery(
            f"orderby: {name!r} is not a DICOM keyword", parameter="orderby"
        ) from None


def _set(identifier: Dataset, path: str, value: str | None) -> int:
    """Put one parameter into the identifier: ``Keyword`` or ``Sequence.Keyword`` (one
    item, PS3.18 8.3.4.1 attribute paths); returns the top-level tag."""
    names = path.split(".")
    if len(names) > 2:
        raise InvalidQuery(
            f"{path!r}: sequence paths of more than one level are not supported",
            parameter=path,
        )
    tags = [attribute_tag(n) for n in names]
    vrs = [_vr(t, n) for t, n in zip(tags, names, strict=True)]
    if len(tags) == 2:
        if vrs[0] != "SQ":
            raise InvalidQuery(f"{names[0]!r} is not a sequence", parameter=path)
        item = identifier[tags[0]].value[0] if tags[0] in identifier else Dataset()
        _put(item, tags[1], vrs[1], value, path)
        if tags[0] not in identifier:
            identifier.add_new(tags[0], "SQ", DicomSequence([item]))
        return tags[0]
    if tags[0] in identifier and value is not None:
        raise InvalidQuery(f"{path} is given more than once", parameter=path)
    _put(identifier, tags[0], vrs[0], value, path)
    return tags[0]


def _put(ds: Dataset, tag: int, vr: str, value: str | None, path: str) -> None:
    if vr == "SQ" and value == "":
        value = None  # an empty sequence key is universal matching (PS3.4 C.2.2.2.6)
    if value is None:
        if tag not in ds:
            ds.add_new(tag, vr, DicomSequence() if vr == "SQ" else None)
        return
    if vr == "SQ":
        raise InvalidQuery(
            f"{path} is a sequence; match on one of its attributes ({path}.Keyword)",
            parameter=path,
        )
    if vr == "UI":
        # PS3.18 8.3.4.1: UID list matching takes the UIDs separated by commas (a
        # backslash, the DIMSE separator, is accepted too).
        value = value.replace(",", "\\")
    try:
        ds.add_new(tag, vr, value)
    except (ValueError, OverflowError):  # pydicom converts IS and DS values, and refuses
        # what is not a number (or an IS of thousands of digits)
        shown = repr(value) if len(value) <= 24 else repr(value[:24]) + "..."
        raise InvalidQuery(f"{path} is not a value of VR {vr}: {shown}", parameter=path) from None


def _includefields(texts: Iterable[str]) -> tuple[list[str], bool]:
    fields: list[str] = []
    include_all = False
    for text in texts:
        for name in (part.strip() for part in text.split(",")):
            if name == "all":
                include_all = True
            elif name:
                fields.append(name)
    return fields, include_all


def _path_uids(
    identifier: Dataset, named: dict[int, str], study_uid: str | None, series_uid: str | None
) -> None:
    for tag, uid in ((STUDY_INSTANCE_UID, study_uid), (SERIES_INSTANCE_UID, series_uid)):
        if uid is None:
            continue
        name = "StudyInstanceUID" if tag == STUDY_INSTANCE_UID else "SeriesInstanceUID"
        try:
            values.check_uid(uid, tag)
        except InvalidQuery as exc:
            raise InvalidQuery(exc.reason, tag, parameter=name) from None
        if tag in identifier:
            raise InvalidQuery(f"{name} is already given by the path", tag, parameter=name)
        identifier.add_new(tag, "UI", uid)
        named[tag] = name


def _patient_keys_only(named: dict[int, str]) -> None:
    # C-FIND ignores keys below the query level (PS3.4 C.4.1.1.3.1); a search that names
    # one means something else and is refused.
    for tag, name in named.items():
        key = key_for_tag(tag)
        if key is None or key.level is not Level.PATIENT:
            raise InvalidQuery(f"{name} is not a key of the patient search", parameter=name)


def _return_keys(
    identifier: Dataset, level: Level, fields: list[str], study: bool, series: bool
) -> None:
    returned = list(_DEFAULTS[level])
    # PS3.18 10.6.3.3.2/3: a search across studies returns the study's attributes, and
    # across series the series' too.
    if level.depth > Level.STUDY.depth and not study:
        returned += _STUDY_DEFAULTS
    if level is Level.IMAGE and not series:
        returned += _SERIES_DEFAULTS
    for name in returned:
        _set(identifier, name, None)
    for name in fields:
        if name == RETRIEVE_URL_KEYWORD:
            continue
        try:
            _set(identifier, name, None)
        except InvalidQuery as exc:
            raise InvalidQuery(exc.reason, parameter="includefield") from None


_UNSUPPORTED = {
    "fuzzymatching": "The fuzzymatching parameter is not supported. Only literal matching "
    "has been performed.",
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. Empty Value "
    "Matching has not been performed.",
}


def _warnings(control: dict[str, str]) -> tuple[str, ...]:
    """PS3.18 8.3.4.2, 8.3.4.5: a matching mode asked for and not performed is said so.
    Multiple value matching (8.3.4.6) is what pypacs always does (PS3.4 C.2.2.2.8)."""
    warnings = []
    for name in ("fuzzymatching", "emptyvaluematching", "multiplevaluematching"):
        if name in control and _boolean(name, control[name]) and name in _UNSUPPORTED:
            warnings.append(_UNSUPPORTED[name])
    return tuple(warnings)


def parse_qido(
    params: Sequence[tuple[str, str]],
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    options: QueryOptions | None = None,
    default_limit: int = 0,
) -> QidoSearch:
    """A QIDO-RS search (the resource's level and path UIDs, and its query parameters)
    → the Query C-FIND would run for it.

    Raises:
        InvalidQuery: a parameter that is malformed or names no attribute; ``parameter``
            names it (a path UID's parameter is ``StudyInstanceUID``/``SeriesInstanceUID``).
    """
    options = options or QueryOptions()
    identifier = Dataset()
    identifier.add_new(QUERY_RETRIEVE_LEVEL, "CS", level.value)
    named: dict[int, str] = {}
    control: dict[str, str] = {}
    includes: list[str] = []
    for name, value in params:
        if name == "includefield":
            includes.append(value)
        elif name in _CONTROL:
            if name in control:
                raise InvalidQuery(f"{name} is given more than once", parameter=name)
            control[name] = value
        elif name != RETRIEVE_URL_KEYWORD:
            named[_set(identifier, name, value)] = name
    _path_uids(identifier, named, study_uid, series_uid)
    if level is Level.PATIENT:
        _patient_keys_only(named)
    fields, include_all = _includefields(includes)
    _return_keys(identifier, level, fields, study_uid is not None, series_uid is not None)
    limit = _non_negative("limit", control["limit"]) if "limit" in control else default_limit
    offset = _non_negative("offset", control.get("offset", "0"))
    warnings = _warnings(control)
    order = parse_orderby(control["orderby"], level) if "orderby" in control else ()
    total = _boolean("total", control["total"]) if "total" in control else False
    model = InformationModel.PATIENT_ROOT if level is Level.PATIENT else InformationModel.STUDY_ROOT
    try:
        query = parse_identifier(
            identifier,
            model,
            # The patient search is hierarchical: its keys are the patient's own.
            dataclasses.replace(
                options, relational=level is not Level.PATIENT, combined_datetime=False
            ),
        )
    except InvalidQuery as exc:
        raise InvalidQuery(
            exc.reason, exc.tag, parameter=named.get(exc.tag or -1, exc.parameter)
        ) from None
    query = dataclasses.replace(
        query, limit=limit, offset=offset, include_all=include_all, order=order
    )
    return QidoSearch(query, warnings, "limit" not in control and default_limit > 0, total)
