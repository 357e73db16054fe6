"""Property: the SQL path and the residual Python matcher give the same answers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from pypacs.archive import Archive, ArchiveOptions
from pypacs.archive.ingest import configure_pydicom
from pypacs.model.levels import InformationModel
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.respond import ResponseContext
from pypacs.query.types import InvalidQuery, QueryOptions

from dicomgen import Spec, make_dataset, study_uid
from helpers import pg_database

NAMES = [
    "Smith^John",
    "SMITH^JANE",
    "smithers^bob",
    "Müller^Jürgen",
    "O_Neil^Ann",
    "50%^Off",
    "Smith^John^^^",
    "Yamada^Tarou=山田^太郎",
]
IDS = ["P1", "p1", "P_1", "P%1", "X*Y", "P10"]
DATES = ["20231231", "20240101", "20240115", "20240131", "20240201"]
TIMES = ["000000", "0930", "101500.25", "1015", "235959.999999", "12"]
MODALITIES = ["CT", "MR", "SR", "US"]
DESCRIPTIONS = ["Chest CT", "chest ct", "Head_MR", "50% dose", None]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    configure_pydicom()
    root = tmp_path_factory.mktemp("prop")
    if request.param == "sqlite":
        yield from _filled(f"sqlite:///{root / 'i.sqlite'}", root)
    else:
        for url in pg_database():
            yield from _filled(url, root)


def _filled(url: str, root: Path) -> Iterator[Archive]:
    arc = Archive.open(
        ArchiveOptions(
            url,
            str(root / "b"),
            overwrite_duplicates=False,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    rnd = random.Random(1234)
    folder = root / "in"
    folder.mkdir()
    for p in range(12):
        pid = IDS[p % len(IDS)] + ("" if p < len(IDS) else "b")
        name = NAMES[p % len(NAMES)]
        for s in range(rnd.randint(1, 3)):
            date, time = rnd.choice(DATES), rnd.choice(TIMES)
            description = rnd.choice(DESCRIPTIONS)
            for se in range(rnd.randint(1, 2)):
                modality = rnd.choice(MODALITIES)
                for i in range(rnd.randint(1, 2)):
                    ds = make_dataset(
                        Spec(pid, name, s + 1, se + 1, i + 1, study_date=date, charset="ISO_IR 192")
                    )
                    ds.StudyTime = time
                    ds.Modality = modality
                    if description is None:
                        del ds.StudyDescription
                    else:
                        ds.StudyDescription = description
                    ds.PatientAge = f"0{rnd.randint(10, 99)}Y"
                    path = folder / f"{p}-{s}-{se}-{i}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    arc.store_file(path)
    yield arc
    arc.close()


def values(choices: list[str]) -> st.SearchStrategy[str]:
    wild = st.sampled_from(choices).flatmap(
        lambda v: st.sampled_from(
            [v, v[:2] + "*", "*" + v[-2:], v[0] + "?" + v[2:], v.upper(), v.lower(), ""]
        )
    )
    return wild


ranges = st.tuples(st.sampled_from([*DATES, ""]), st.sampled_from([*DATES, ""])).map(
    lambda t: f"{t[0]}-{t[1]}" if any(t) else ""
)
time_ranges = st.tuples(st.sampled_from([*TIMES, ""]), st.sampled_from([*TIMES, ""])).map(
    lambda t: f"{t[0]}-{t[1]}" if any(t) else t[0]
)


def several(single: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One to four values of a key, separated by backslashes (PS3.4 C.2.2.2.8): SQL takes a
    list of values as one parameter, the residual matcher value by value."""
    return st.lists(single, min_size=1, max_size=4).map("\\".join)


# Some name no study: patients have one to three studies.
STUDY_UIDS = [
    study_uid(IDS[p % len(IDS)] + ("" if p < len(IDS) else "b"), s)
    for p in range(12)
    for s in (1, 2, 3, 4)
]

KEY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "PatientName": several(values(NAMES)),
    "PatientID": several(values(IDS)),
    "StudyDate": several(st.one_of(st.sampled_from(DATES), ranges)),
    "StudyTime": several(time_ranges),
    "StudyDescription": several(values([d for d in DESCRIPTIONS if d])),
    "ModalitiesInStudy": several(st.sampled_from([*MODALITIES, "CT\\MR", "", "C?"])),
    "AccessionNumber": several(st.sampled_from(["ACC0001", "ACC000?", "ACC*", ""])),
    "PatientAge": several(st.sampled_from(["045Y", "0*", ""])),
    "StudyInstanceUID": st.lists(st.sampled_from(STUDY_UIDS), min_size=1, max_size=6).map(
        "\\".join
    ),
}
# One to three keys at a time, so that most queries match something.
identifiers = st.lists(
    st.sampled_from(sorted(KEY_VALUES)), min_size=1, max_size=3, unique=True
).flatmap(lambda names: st.fixed_dictionaries({name: KEY_VALUES[name] for name in names}))


def answers(
    archive: Archive, keys: dict[str, str], *, sql: bool, options: QueryOptions
) -> list[str]:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    query = parse_identifier(ds, InformationModel.STUDY_ROOT, options)
    return [r.StudyInstanceUID for r in archive.find(query, ResponseContext(), sql_matching=sql)]


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=identifiers, case_insensitive=st.booleans(), combined=st.booleans())
def test_sql_and_residual_agree(
    archive: Archive, keys: dict[str, str], case_insensitive: bool, combined: bool
) -> None:
    options = QueryOptions(pn_case_insensitive=case_insensitive, combined_datetime=combined)
    try:
        via_sql = answers(archive, keys, sql=True, options=options)
    except InvalidQuery:
        return
    assert via_sql == answers(archive, keys, sql=False, options=options)


def test_the_fixture_is_not_trivial(archive: Archive) -> None:
    options = QueryOptions()
    everything = answers(archive, {}, sql=True, options=options)
    smiths = answers(archive, {"PatientName": "SMITH*"}, sql=True, options=options)
    assert len(everything) > 15
    assert 0 < len(smiths) < len(everything)
    assert answers(archive, {"PatientID": "P%1"}, sql=True, options=options) != answers(
        archive, {"PatientID": "P_1"}, sql=True, options=options
    )
