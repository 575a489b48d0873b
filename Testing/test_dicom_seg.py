"""DICOM SEG export, read back by dcmqi (the reader Slicer's QuantitativeReporting uses) onto the source series."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import oblique_volume, write_dicom_series

from crossmodal.cli import EXIT_INPUT_ERROR, main
from crossmodal.dicom_seg import dicom_seg
from crossmodal.errors import InputError
from crossmodal.image_io import read_image, write_image
from crossmodal.labels import ABDOMEN
from crossmodal.phantoms import abdominal_volume

SEGIMAGE2ITKIMAGE = shutil.which("segimage2itkimage", path=str(Path(sys.executable).parent)) or shutil.which("segimage2itkimage")
needs_dcmqi = pytest.mark.skipif(SEGIMAGE2ITKIMAGE is None, reason="dcmqi (segimage2itkimage) is not installed: pip install dcmqi")


def read_back(seg: Path, folder: Path) -> dict[str, sitk.Image]:
    """Each segment of ``seg`` as dcmqi rebuilds it, by segment label."""
    folder.mkdir()
    done = subprocess.run([SEGIMAGE2ITKIMAGE, "--inputDICOM", str(seg), "--outputDirectory", str(folder), "--outputType", "nrrd"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    meta = json.loads((folder / "meta.json").read_text())
    labels = [attributes["SegmentLabel"] for group in meta["segmentAttributes"] for attributes in group]
    return {label: sitk.ReadImage(str(folder / f"{i}.nrrd")) for i, label in enumerate(labels, 1)}


def assert_on_grid(image: sitk.Image, source: sitk.Image) -> None:
    assert image.GetSize() == source.GetSize()
    for field in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(image, field)(), getattr(source, field)(), atol=1e-4, err_msg=field)


@pytest.fixture
def oblique_series(tmp_path) -> tuple[Path, sitk.Image]:
    series = write_dicom_series(sitk.Cast(sitk.RescaleIntensity(oblique_volume(), 0, 1000), sitk.sitkInt16), tmp_path / "series")
    return series, read_image(series)


def organs_on(image: sitk.Image) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    array[2:6, 5:15, 5:12] = 1  # liver
    array[3:7, 2:6, 14:20] = 2  # right kidney
    array[4, 20:25, 25:30] = 4  # spleen, one slice; no left kidney
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return labels


@needs_dcmqi
def test_an_oblique_series_round_trips_through_dcmqi_voxel_for_voxel(oblique_series, tmp_path):
    series, image = oblique_series
    labels = organs_on(image)
    seg = dicom_seg(labels, ABDOMEN, series, model="tiny", version="1.2.3")
    seg.save_as(tmp_path / "seg.dcm")
    back = read_back(tmp_path / "seg.dcm", tmp_path / "back")
    assert list(back) == ["liver", "right kidney", "spleen"]  # only the structures found
    for label in ABDOMEN.labels:
        if label.name in back:
            assert_on_grid(back[label.name], image)
            assert np.array_equal(sitk.GetArrayFromImage(back[label.name]) > 0, sitk.GetArrayFromImage(labels) == label.value), label.name

    written = pydicom.dcmread(tmp_path / "seg.dcm")
    source = pydicom.dcmread(next(series.iterdir()))
    assert written.StudyInstanceUID == source.StudyInstanceUID and written.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert written.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    kidney = written.SegmentSequence[1]
    assert kidney.SegmentLabel == "right kidney" and kidney.SegmentAlgorithmType == "AUTOMATIC"
    coded = kidney.SegmentedPropertyTypeCodeSequence[0]
    assert (coded.CodeValue, coded.CodingSchemeDesignator) == ("64033007", "SCT")  # as the Slicer segment's terminology
    assert coded.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Right"
    assert kidney.SegmentAlgorithmName == "tiny" and written.SoftwareVersions == "1.2.3"


def test_nothing_found_gives_no_seg_and_a_series_without_frame_of_reference_is_refused(oblique_series, tmp_path):
    series, image = oblique_series
    assert dicom_seg(organs_on(image) * 0, ABDOMEN, series, model="tiny", version="1") is None
    for path in series.iterdir():
        dataset = pydicom.dcmread(path)
        del dataset.FrameOfReferenceUID
        dataset.save_as(path)
    with pytest.raises(InputError, match="cannot be referenced by a DICOM SEG"):
        dicom_seg(organs_on(image), ABDOMEN, series, model="tiny", version="1")


@needs_dcmqi
def test_segment_writes_a_dicom_seg_for_a_dicom_series_and_only_when_it_can(catalog, tmp_path, capsys):
    volume, _ = abdominal_volume("CT", seed=5)
    series = write_dicom_series(sitk.Cast(volume, sitk.sitkInt16), tmp_path / "ct", modality="CT")
    assert main(["segment", "--image", str(series), "--model", "tiny-v4", "--out", str(tmp_path / "out"), "--events", "jsonl"]) == 0
    summary = json.loads((tmp_path / "out" / "segment.json").read_text())
    organs = read_image(summary["outputs"]["organs"])
    back = read_back(Path(summary["outputs"]["segmentation"]), tmp_path / "back")
    assert back, "the tiny model found no organ"
    for label in ABDOMEN.labels:
        found = sitk.GetArrayFromImage(organs) == label.value
        assert (label.name in back) == found.any(), label.name
        if label.name in back:
            assert_on_grid(back[label.name], read_image(series))
            assert np.array_equal(sitk.GetArrayFromImage(back[label.name]) > 0, found), label.name
    capsys.readouterr()

    nifti = write_image(volume, tmp_path / "ct.nii.gz")
    assert main(["segment", "--image", str(nifti), "--format", "dicom-seg", "--out", str(tmp_path / "refused")]) == EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--image {nifti} is not a DICOM series folder" in err and not (tmp_path / "refused").exists()
    assert main(["segment", "--image", str(series), "--model", "tiny-v4", "--format", "nifti", "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "segmentation.dcm").exists()
