"""VR facts used by matching (PS3.4 C.2.2.2, PS3.5 6.2)."""

from __future__ import annotations

import re
from functools import lru_cache

from pydicom.datadict import dictionary_VM, dictionary_VR

# PS3.4 C.2.2.2.4: wildcard matching applies to these VRs only; in a key of any other VR
# "*" and "?" are literal characters (and make the value invalid where the VR forbids them).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

# PS3.4 C.2.2.2.5: range matching applies to dates, times and date-times.
RANGE_VRS = frozenset({"DA", "TM", "DT"})

# VRs whose value is a single string that may contain a backslash (PS3.5 6.2: LT, ST, UT
# and UR never hold several values).
SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})

# Leading spaces are significant in these; trailing ones are padding everywhere
# (PS3.5 6.2, Table 6.2-1).
LEADING_SPACE_SIGNIFICANT = frozenset({"LT", "ST", "UT", "UR", "UC"})

TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)
NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})


_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")


@lru_cache(maxsize=4096)
def vr_of(tag: int) -> str:
    """The dictionary VR of a tag ("UN" for private and unknown tags)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    # Ambiguous VRs (e.g. "US or SS") never carry query keys; take the first.
    return vr.split(" or ")[0]


@lru_cache(maxsize=4096)
def may_be_multivalued(tag: int) -> bool:
    """Whether the dictionary allows more than one value (VM other than 1)."""
    try:
        return dictionary_VM(tag) != "1"
    except KeyError:
        return True


def normalise(value: str, vr: str) -> str:
    """Strip the padding PS3.5 6.2 calls insignificant for ``vr``."""
    if vr in LEADING_SPACE_SIGNIFICANT:
        return value.rstrip(" ")
    if vr == "UI":
        return value.rstrip("\0 ").strip()
    return value.strip(" ")


def pn_normal(group: str) -> str:
    """A PN component group without insignificant trailing separators or spaces."""
    return "^".join(part.strip(" ") for part in group.split("^")).rstrip("^")


def pn_match_form(value: str) -> str:
    """What the PN match column holds: the alphabetic group, normalised, upper-cased."""
    return pn_normal(pn_groups(value)[0]).upper()


def pn_groups(value: str) -> tuple[str, str, str]:
    """The alphabetic, ideographic and phonetic component groups of a PN (PS3.5 6.2.1)."""
    parts = value.split("=")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def normalise_time(value: str, *, upper: bool = False) -> str:
    """HH[MM[SS[.F{1,6}]]] → HHMMSS.FFFFFF; a partial upper bound covers its whole unit.

    Raises:
        ValueError: not a time.
    """
    value = value.replace(":", "").strip()
    if not _TM.match(value):
        raise ValueError(f"not a time: {value!r}")
    head, _, fraction = value.partition(".")
    fill = "9" if upper else "0"
    head = (head + ("5959" if upper else "0000"))[:6] if len(head) < 6 else head[:6]
    fraction = (fraction + fill * 6)[:6]
    return f"{head}.{fraction}"


def normalise_datetime(value: str, *, upper: bool = False) -> str:
    """YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX] → YYYYMMDDHHMMSS.FFFFFF (offset ignored).

    Raises:
        ValueError: not a date-time.
    """
    if not _DT.match(value.strip()):
        raise ValueError(f"not a date-time: {value!r}")
    core = re.split(r"[+-]", value.strip(), maxsplit=1)[0]
    head, _, fraction = core.partition(".")
    template = "99991231235959" if upper else "00000101000000"
    if upper and len(head) == 6:  # YYYYMM: the month's last day is not needed for order
        template = "99993131235959"
    head = head + template[len(head) :]
    fraction = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{head}.{fraction}"
