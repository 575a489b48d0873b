"""Dataset layouts: MS-CMRSeg discovery and the nnU-Net v2 raw layout, on made-up folders and real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_volume, shared_data

from crossmodal.datasets import discover_mscmrseg, read_nnunet_dataset
from crossmodal.errors import InputError
from crossmodal.image_io import write_image


def _mask(values, seed=0) -> sitk.Image:
    volume = oblique_volume(size=(8, 8, 3), seed=seed)
    rng = np.random.default_rng(seed)
    mask = sitk.GetImageFromArray(rng.choice(values, size=(3, 8, 8)).astype(np.int16))
    mask.CopyInformation(volume)
    return mask


@pytest.fixture
def mscmrseg(tmp_path):
    small = oblique_volume(size=(8, 8, 3))
    for name in ["patient1_C0", "patient1_DE", "patient2_C0", "patient2_DE", "patient10_DE"]:
        write_image(small, tmp_path / f"{name}.nii.gz")
    for name in ["patient1_C0_manual", "patient1_DE_manual", "patient2_C0_manual", "patient10_DE_manual"]:
        write_image(_mask([0, 200, 500, 600]), tmp_path / f"{name}.nii.gz")
    write_image(_mask([0, 200]), tmp_path / "patient2_DE_scribble.nii.gz")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_mscmrseg_discovery(mscmrseg):
    cases = discover_mscmrseg(mscmrseg)
    assert [c.patient for c in cases] == [1, 2, 10]  # numeric order, not 1, 10, 2
    one, two, ten = cases
    assert one.is_pair and one.has_mask("DE") and one.has_mask("C0")
    assert two.is_pair and not two.has_mask("DE") and "DE" in two.scribbles
    assert not ten.is_pair and ten.has_mask("DE")
    assert one.read("DE").GetSize() == (8, 8, 3)
    assert set(np.unique(sitk.GetArrayFromImage(one.read_mask("DE")))) <= {0, 200, 500, 600}


def test_mscmrseg_missing_modality_is_named(mscmrseg):
    ten = discover_mscmrseg(mscmrseg)[2]
    with pytest.raises(InputError, match="patient10: has no cine image"):
        ten.read("C0")


def test_mscmrseg_unexpected_label_value(mscmrseg):
    write_image(_mask([0, 200, 300]), mscmrseg / "patient1_DE_manual.nii.gz")
    case = discover_mscmrseg(mscmrseg)[0]
    with pytest.raises(InputError, match=r"patient1_DE_manual.nii.gz: mask has unexpected label value\(s\) \[300\]"):
        case.read_mask("DE")


def test_mscmrseg_mask_without_image(mscmrseg):
    write_image(_mask([0, 200]), mscmrseg / "patient7_T2_manual.nii.gz")
    with pytest.raises(InputError, match="masks without their image: patient7_T2"):
        discover_mscmrseg(mscmrseg)


def test_mscmrseg_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="holds no MS-CMRSeg files"):
        discover_mscmrseg(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        discover_mscmrseg(tmp_path / "absent")


@pytest.mark.realdata
def test_mscmrseg_real_layout_matches_readme():
    cases = {c.patient: c for c in discover_mscmrseg(shared_data("mscmrseg"))}
    full_pairs = sorted(p for p, c in cases.items() if c.is_pair and c.has_mask("DE"))
    assert full_pairs == [1, 3, 5, 8, 11, 28, 29, 30, 33, 35]
    semi = sorted(p for p, c in cases.items() if c.is_pair and not c.has_mask("DE"))
    assert semi == [2, 4, 6, 7, 9, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25, 26, 27, 31, 32, 34]
    assert all(cases[p].has_mask("C0") for p in full_pairs + semi)
    assert sorted(p for p, c in cases.items() if not c.is_pair) == [36, 37, 38, 39, 40, 41, 42, 43, 44, 45]


def _nnunet(root, cases=("a", "b"), labels=None, channels=("CT",)):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {
        "name": "toy",
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels or {"background": 0, "liver": 1, "spleen": 4},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for i, case in enumerate(cases):
        for c in range(len(channels)):
            write_image(oblique_volume(size=(6, 6, 2), seed=i), root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        write_image(_mask([0, 1, 4], seed=i), root / "labelsTr" / f"{case}.nii.gz")
    return root


def test_nnunet_layout(tmp_path):
    ds = read_nnunet_dataset(_nnunet(tmp_path, channels=("T1", "T2")))
    assert ds.channel_names == ("T1", "T2")
    assert [c.case_id for c in ds.cases] == ["a", "b"]
    assert [p.name for p in ds.cases[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert ds.read_label(ds.cases[1]).GetSize() == (8, 8, 3)


def test_nnunet_broken_json_is_named(tmp_path):
    root = _nnunet(tmp_path)
    (root / "dataset.json").write_text('{"channel_names": {"0": "CT"},, }')
    with pytest.raises(InputError, match=r"dataset.json: is not valid JSON \(line 1, column"):
        read_nnunet_dataset(root)


def test_nnunet_missing_keys(tmp_path):
    root = _nnunet(tmp_path)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(InputError, match=r"lacks required key\(s\) \['labels', 'file_ending'\]"):
        read_nnunet_dataset(root)


def test_nnunet_image_without_label(tmp_path):
    root = _nnunet(tmp_path)
    (root / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(InputError, match=r"labelsTr/b.nii.gz: missing: image b_0000.nii.gz has no label"):
        read_nnunet_dataset(root)
    ds = read_nnunet_dataset(root, require_labels=False)  # inference needs no labels
    assert ds.cases[1].label is None


def test_nnunet_missing_channel_and_count(tmp_path):
    root = _nnunet(tmp_path, channels=("T1", "T2"))
    (root / "imagesTr" / "a_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case a lacks channel file\(s\) \['_0001'\]"):
        read_nnunet_dataset(root)


def test_nnunet_label_values_checked(tmp_path):
    root = _nnunet(tmp_path, labels={"background": 0, "liver": 1})
    ds = read_nnunet_dataset(root)
    with pytest.raises(InputError, match=r"label value\(s\) \[4\] that dataset.json does not list"):
        ds.read_label(ds.cases[0])


@pytest.mark.realdata
@pytest.mark.parametrize("name, count, channel", [("btcv_ct", 4, "CT"), ("chaos_t2", 15, "MRI")])
def test_nnunet_real_datasets(name, count, channel):
    ds = read_nnunet_dataset(shared_data(name))
    assert len(ds.cases) == count and ds.channel_names == (channel,)
    assert ds.labels == {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    label = ds.read_label(ds.cases[0])
    image = sitk.ReadImage(str(ds.cases[0].images[0]))
    assert label.GetSize() == image.GetSize()


def test_float_mask_with_fractional_values_is_refused():
    from crossmodal.labels import MSCMRSEG

    with pytest.raises(InputError, match="m: mask has non-integer values"):
        MSCMRSEG.check(np.array([0.0, 200.0, 200.5]), "m")
    MSCMRSEG.check(np.array([0.0, 200.0, 500.0]), "m")  # whole-number floats are fine
