"""``segment --batch``: every case of a folder, one output folder each, a summary table; a bad case is skipped."""

from __future__ import annotations

import csv
import json

import SimpleITK as sitk
from conftest import write_dicom_series
from test_cli import events_of

from crossmodal.cli import EXIT_INPUT_ERROR, EXIT_SOME_FAILED, main
from crossmodal.image_io import write_image
from crossmodal.phantoms import abdominal_volume, write_mscmrseg_phantoms, write_nnunet_phantoms


def test_an_mscmrseg_folder_segments_case_by_case_and_a_broken_case_is_skipped(catalog, tmp_path, capsys):
    data = write_mscmrseg_phantoms(tmp_path / "data", labelled=2, unlabelled=1)
    (data / "patient9_DE.nii.gz").write_bytes(b"not an image")  # a broken export among good ones
    code = main(["segment", "--batch", str(data), "--model", "tiny-mmsdnet", "--out", str(tmp_path / "out"), "--events", "jsonl"])
    events = events_of(capsys)
    assert code == EXIT_SOME_FAILED
    bar = [(e["done"], e["total"]) for e in events if e["type"] == "progress"]
    assert bar == [(n, 4) for n in range(5)]  # one bar over the cases, nothing else
    assert any(e["type"] == "warning" and e["message"].startswith("patient9: failed, skipped: ") for e in events)
    assert events[-1]["type"] == "result" and events[-1]["failed"] == ["patient9"] and events[-1]["cases"] == 4
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv", encoding="utf-8")))
    assert [(r["case"], r["status"]) for r in rows] == [("patient1", "ok"), ("patient2", "ok"), ("patient3", "ok"), ("patient9", "failed")]
    assert rows[0]["dice myocardium"] and not rows[2]["dice myocardium"]  # Dice where a reference exists
    assert "patient9_DE.nii.gz" in rows[3]["message"]
    for case in ("patient1", "patient2", "patient3"):
        assert json.loads((tmp_path / "out" / case / "segment.json").read_text())["task"] == "cardiac"
    assert not (tmp_path / "out" / "patient9").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed"] == 1 and set(summary["mean_dice"]) == {"myocardium", "left ventricle"}


def test_an_nnunet_dataset_and_a_plain_folder_of_images(catalog, tmp_path, capsys):
    dataset = write_nnunet_phantoms(tmp_path / "Dataset001_CT", "CT", 2)
    assert main(["segment", "--batch", str(dataset), "--model", "tiny-v4", "--out", str(tmp_path / "nn"), "--events", "jsonl"]) == 0
    rows = json.loads((tmp_path / "nn" / "summary.json").read_text())["cases"]
    assert [r["case"] for r in rows] == ["CT_000", "CT_001"]
    assert all("dice liver" in r and "volume_ml liver" in r for r in rows)  # labelsTr/ are the references

    plain = tmp_path / "plain"
    plain.mkdir()
    image, _ = abdominal_volume("MR", seed=8)
    write_image(image, plain / "mr_a.nii.gz")
    write_dicom_series(sitk.Cast(image, sitk.sitkInt16), plain / "mr_b")
    capsys.readouterr()
    assert main(["segment", "--batch", str(plain), "--model", "tiny-v4", "--out", str(tmp_path / "p"), "--events", "jsonl"]) == 0
    rows = json.loads((tmp_path / "p" / "summary.json").read_text())["cases"]
    assert [(r["case"], r["status"]) for r in rows] == [("mr_a", "ok"), ("mr_b", "ok")]
    assert (tmp_path / "p" / "mr_b" / "segmentation.dcm").exists()  # a DICOM case gets its DICOM SEG
    (plain / "notes").mkdir()
    (plain / "notes" / "readme.txt").write_text("not a series")
    assert main(["segment", "--batch", str(plain), "--model", "tiny-v4", "--out", str(plain / "results"), "--events", "jsonl"]) == 0
    assert main(["segment", "--batch", str(plain), "--model", "tiny-v4", "--out", str(plain / "results"), "--events", "jsonl"]) == 0  # again
    rows = json.loads((plain / "results" / "summary.json").read_text())["cases"]
    assert [r["case"] for r in rows] == ["mr_a", "mr_b"]  # neither a folder without a series nor the batch's own output


def test_a_batch_takes_no_single_inputs_and_needs_cases(catalog, tmp_path, capsys):
    image = write_image(abdominal_volume("CT", seed=1)[0], tmp_path / "ct.nii.gz")
    assert main(["segment", "--batch", str(tmp_path), "--image", str(image), "--out", str(tmp_path / "o")]) == EXIT_INPUT_ERROR
    assert "--batch: segments the cases of a folder; give no --image" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["segment", "--batch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == EXIT_INPUT_ERROR
    assert "holds no cases" in capsys.readouterr().err
