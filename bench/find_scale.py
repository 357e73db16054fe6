"""C-FIND engine latency on a large index (pypacs alone).

Populates an index with N instances through the archive layer (the ingest's own record
builder and index writes; no DIMSE, no image files), then times the benchmark queries
in-process through ``Archive.find`` and, over DIMSE, through a pypacs server queried by
DCMTK's ``findscu``. Prints medians; the process start of ``findscu`` itself (measured with
``echoscu``) is shown as the floor of the DIMSE figures.

    python bench/find_scale.py --instances 1000000 --data /tmp/pypacs-find-scale
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from pypacs.archive import Archive, ArchiveOptions
from pypacs.archive.ingest import Header, build_record, configure_pydicom
from pypacs.index import tx
from pypacs.index.writes import upsert_instance
from pypacs.model.levels import InformationModel
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.respond import ResponseContext
from pypacs.query.types import QueryOptions

ROOT = "1.2.826.0.1.3680043.10.1255.9"
SURNAMES = [f"Name{i:03d}" for i in range(400)] + ["Smith", "Smithson"]
MODALITIES = ["CT", "MR", "US", "CR"]
SERIES_PER_STUDY, INSTANCES_PER_SERIES, STUDIES_PER_PATIENT = 2, 5, 5


def template() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    for keyword in (
        "StudyTime",
        "StudyID",
        "ReferringPhysicianName",
        "BodyPartExamined",
        "InstitutionName",
        "StationName",
        "PatientBirthDate",
        "PatientSex",
    ):
        setattr(ds, keyword, "")
    ds.StudyTime, ds.StudyID, ds.PatientSex = "101500", "1", "O"
    ds.InstitutionName, ds.StationName = "Bench Hospital", "CT01"
    ds.Rows = ds.Columns = 512
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def populate(archive: Archive, instances: int, batch: int = 2000) -> None:
    rnd = random.Random(7)
    ds = template()
    header = Header(ds, ds.file_meta)
    per_patient = STUDIES_PER_PATIENT * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    records = []
    started = time.perf_counter()
    for n in range(instances):
        p, rest = divmod(n, per_patient)
        s, rest = divmod(rest, SERIES_PER_STUDY * INSTANCES_PER_SERIES)
        se, i = divmod(rest, INSTANCES_PER_SERIES)
        if rest == 0:
            surname = SURNAMES[rnd.randrange(len(SURNAMES))] if p % 50 else "Smith"
            study_date = (
                f"{2015 + rnd.randrange(10)}{rnd.randrange(1, 13):02d}{rnd.randrange(1, 29):02d}"
            )
            ds.PatientName = f"{surname}^P{p}"
            ds.PatientID = f"PID{p:07d}"
            ds.StudyInstanceUID = f"{ROOT}.{p}.{s}"
            ds.StudyDate = study_date
            ds.AccessionNumber = f"ACC{p:07d}{s}"
            ds.StudyDescription = f"Study {s}"
            ds.PatientAge = f"0{20 + rnd.randrange(70)}Y"
        if i == 0:
            ds.SeriesInstanceUID = f"{ROOT}.{p}.{s}.{se}"
            ds.Modality = MODALITIES[(p + s + se) % len(MODALITIES)]
            ds.SeriesNumber = se + 1
        ds.SOPInstanceUID = f"{ROOT}.{p}.{s}.{se}.{i}"
        ds.InstanceNumber = i + 1
        records.append(build_record(header, f"{n % 256:02x}/{n:032x}", 524288))
        if len(records) == batch or n == instances - 1:
            chunk = records

            def write(conn, chunk=chunk):  # type: ignore[no-untyped-def]
                for record in chunk:
                    upsert_instance(conn, record, replace=False)

            tx.write(archive.engine, write)
            records = []
            done = n + 1
            rate = done / (time.perf_counter() - started)
            print(f"\r{done:,} instances ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


QUERIES: dict[str, tuple[str, dict[str, str]]] = {
    "exact PatientID": ("STUDY", {"PatientID": "PID0000777"}),
    "PatientName SMI*": ("STUDY", {"PatientName": "SMI*"}),
    "one-month StudyDate": ("STUDY", {"StudyDate": "20200301-20200331"}),
    "exact AccessionNumber": ("STUDY", {"AccessionNumber": "ACC00007773"}),
    "IMAGE level, one series": (
        "IMAGE",
        {"StudyInstanceUID": f"{ROOT}.777.3", "SeriesInstanceUID": f"{ROOT}.777.3.1"},
    ),
    "non-indexed PatientAge": ("STUDY", {"PatientAge": "045Y"}),
}
RETURN = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)


def identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in RETURN if level == "STUDY" else ("SOPInstanceUID", "InstanceNumber"):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def in_process(archive: Archive, repeat: int) -> dict[str, tuple[int, float]]:
    results = {}
    for name, (level, keys) in QUERIES.items():
        times, count = [], 0
        for _ in range(repeat):
            query = parse_identifier(
                identifier(level, keys), InformationModel.STUDY_ROOT, QueryOptions(relational=True)
            )
            t = time.perf_counter()
            count = sum(1 for _ in archive.find(query, ResponseContext()))
            times.append((time.perf_counter() - t) * 1000)
        results[name] = (count, statistics.median(times))
    return results


def over_dimse(data: Path, repeat: int) -> dict[str, float]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pypacs",
            "serve",
            "--data",
            str(data),
            "--dicom-port",
            "0",
            "--http-port",
            "0",
            "--check-on-start",
            "false",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    port = line.split("dicom=")[1].split()[0].rsplit(":", 1)[1]
    results = {}
    try:

        def timed(cmd: list[str]) -> float:
            t = time.perf_counter()
            subprocess.run(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            )
            return (time.perf_counter() - t) * 1000

        results["(echoscu floor)"] = statistics.median(
            timed(["echoscu", "-aec", "PYPACS", "127.0.0.1", port]) for _ in range(repeat)
        )
        for name, (level, keys) in QUERIES.items():
            ds = identifier(level, keys)
            args = ["findscu", "-S", "-aec", "PYPACS", "127.0.0.1", port]
            for elem in ds:
                args += ["-k", f"{elem.keyword}={elem.value if elem.value is not None else ''}"]
            results[name] = statistics.median(timed(args) for _ in range(repeat))
    finally:
        proc.terminate()
        proc.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/pypacs-find-scale"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="query an index populated before")
    args = parser.parse_args()
    configure_pydicom()
    options = ArchiveOptions(
        f"sqlite:///{args.data / 'index.sqlite'}",
        str(args.data / "blobs"),
        overwrite_duplicates=False,
        reserve_path="",
        reserve_bytes=0,
        max_instance_bytes=0,
        fsync=False,
    )
    archive = Archive.open(options)
    try:
        if not args.reuse:
            populate(archive, args.instances)
        stats = archive.statistics()
        print(
            f"index: {stats.patients:,} patients, {stats.studies:,} studies, "
            f"{stats.series:,} series, {stats.instances:,} instances, "
            f"{(args.data / 'index.sqlite').stat().st_size / 2**20:,.0f} MiB"
        )
        engine = in_process(archive, args.repeat)
    finally:
        archive.close()
    dimse = over_dimse(args.data, args.repeat)
    print(f"{'query':28} {'matches':>8} {'engine ms':>10} {'findscu ms':>11}")
    print(f"{'(echoscu floor)':28} {'':>8} {'':>10} {dimse['(echoscu floor)']:>11.1f}")
    for name, (count, ms) in engine.items():
        print(f"{name:28} {count:>8,} {ms:>10.1f} {dimse[name]:>11.1f}")


if __name__ == "__main__":
    main()
