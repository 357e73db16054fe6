"""The fast DICOM JSON conversion gives what pydicom's own gives."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from pypacs.archive.dicomjson import element_json
from pypacs.archive.ingest import configure_pydicom

from dicomgen import Spec, make_dataset


def rich() -> Dataset:
    ds = make_dataset(
        Spec("P1", "Yamada^Tarou=山田^太郎=やまだ^たろう", 1, 1, 1, charset="ISO_IR 192")
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "AXIAL"]
    ds.OtherPatientNames = ["A^B", "", "C^D"]
    ds.ModalitiesInStudy = ""
    ds.ReferringPhysicianName = ""
    ds.ImagePositionPatient = [1.5, -2, 3.25]
    ds.WindowCenter = "40"
    ds.SliceThickness = "1.25"
    ds.AcquisitionMatrix = [0, 256, 256, 0]
    ds.RescaleSlope = 1
    ds.FrameIncrementPointer = 0x00181063
    ds.PatientWeight = None
    item = Dataset()
    item.CodeValue = "XR"
    item.CodingSchemeDesignator = "DCM"
    ds.ProcedureCodeSequence = [item]
    return ds


SKIP = {"PixelData", "OtherPatientNames"}


@pytest.mark.parametrize("keyword", [e.keyword for e in rich() if e.keyword not in SKIP])
def test_same_as_pydicom(keyword: str) -> None:
    configure_pydicom()
    elem = rich()[keyword]
    assert element_json(elem) == elem.to_json_dict(None, 1024)


def test_empty_name_among_several() -> None:
    # pydicom 3.0 fails on an empty PN value among several; PS3.18 F.2.5 writes it as null.
    assert element_json(rich()["OtherPatientNames"]) == {
        "vr": "PN",
        "Value": [{"Alphabetic": "A^B"}, None, {"Alphabetic": "C^D"}],
    }
    restored = Dataset.from_json({"00101001": element_json(rich()["OtherPatientNames"])})
    assert [str(v) for v in restored.OtherPatientNames] == ["A^B", "", "C^D"]
