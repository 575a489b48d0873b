"""The `crossmodal` command line: training into bundles, segmenting, evaluating, the catalog, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import BAD_FILES, bad_file
from conftest import TINY_MMSDNET, write_config, write_dicom_series

from crossmodal.cli import EXIT_INPUT_ERROR, main
from crossmodal.geometry import Grid
from crossmodal.image_io import read_image, write_image
from crossmodal.phantoms import abdominal_volume, cardiac_pair

ROOT = Path(__file__).resolve().parents[1]
def assert_same_grid(written: sitk.Image, reference: sitk.Image, name: str = "") -> None:
    """Equal up to NIfTI's single-precision header (its quaternion rounds directions at ~1e-8)."""
    a, b = Grid.of(written), Grid.of(reference)
    assert a.size == b.size, name
    for field in ("origin", "spacing", "direction"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-5, err_msg=f"{name} {field}")


def events_of(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def assert_progress_moves(events: list[dict], stage: str) -> None:
    """A panel's bar moves: progress from 0 through intermediate steps to its total."""
    done = [(e["done"], e["total"]) for e in events if e["type"] == "progress" and e["stage"] == stage]
    assert done[0][0] == 0 and done[-1][0] == done[-1][1] and len({d for d, t in done if 0 < d < t}) >= 1, done
    assert [d for d, _ in done[1:]] == sorted(d for d, _ in done[1:])


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pair")
    p = cardiac_pair(seed=40)
    return {"lge": write_image(p.lge, folder / "lge.nii.gz"), "cine": write_image(p.cine, folder / "cine.nrrd"),
            "reference": write_image(p.lge_mask, folder / "lge_mask.nii.gz")}


def test_training_writes_a_bundle_with_events_and_no_leftover_checkpoint(models, tmp_path, phantom_mscmrseg, capsys):
    bundle = models["cardiac"]
    assert sorted(p.name for p in bundle.iterdir()) == ["card.json", "model.pt", "progress.csv", "progress.png", "recipe.json"]
    rows = (bundle / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and rows[0].endswith(",validation") and len(rows) == 1 + 4  # every step of the tiny training
    card = json.loads((bundle / "card.json").read_text())
    assert card["architecture"] == "MMSDNet" and card["training"]["steps"] == 4 and card["validation"]["patients"] == [1]
    code = main(["train", "--config", str(write_config(tmp_path, TINY_MMSDNET, steps=2)), "--data", str(phantom_mscmrseg),
                 "--out", str(tmp_path / "m"), "--events", "jsonl"])
    events = events_of(capsys)
    assert code == 0 and {e["schema"] for e in events} == {1}
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "result" and "metrics" in kinds
    training = [e for e in events if e["type"] == "progress" and e["stage"] == "training"]
    assert [e["done"] for e in training] == [1, 2] and training[-1]["total"] == 2
    assert events[-1]["outputs"] == {"bundle": str(tmp_path / "m"), "curves_csv": str(tmp_path / "m" / "progress.csv"),
                                     "curves_png": str(tmp_path / "m" / "progress.png")}


def test_training_refuses_to_overwrite_and_checks_its_recipe(models, tmp_path, phantom_mscmrseg, capsys):
    config = write_config(tmp_path, TINY_MMSDNET)
    before = (models["cardiac"] / "model.pt").read_bytes()
    assert main(["train", "--config", str(config), "--data", str(phantom_mscmrseg), "--out", str(models["cardiac"])]) == EXIT_INPUT_ERROR
    assert "already holds a model bundle" in capsys.readouterr().err
    assert (models["cardiac"] / "model.pt").read_bytes() == before
    assert main(["train", "--config", str(config), "--data", str(phantom_mscmrseg), "--out", str(tmp_path / "x"), "--resume"]) == EXIT_INPUT_ERROR
    assert "no unfinished training to resume" in capsys.readouterr().err
    typo = write_config(tmp_path, TINY_MMSDNET, lerning_rate=0.1)
    assert main(["train", "--config", str(typo), "--data", str(phantom_mscmrseg)]) == EXIT_INPUT_ERROR
    assert "unknown key(s) ['lerning_rate']" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--data", str(tmp_path / "nowhere")]) == EXIT_INPUT_ERROR
    assert "data folder for 'mscmrseg' does not exist" in capsys.readouterr().err


def test_a_model_is_trained_again_from_the_recipe_its_bundle_keeps(catalog, tmp_path, phantom_mscmrseg, capsys):
    assert main(["train", "--config", "tiny-mmsdnet", "--data", str(phantom_mscmrseg), "--steps", "1", "--out", str(tmp_path / "again")]) == 0
    kept, again = (json.loads((folder / "recipe.json").read_text()) for folder in (catalog["cardiac"], tmp_path / "again"))
    assert again == {**kept, "steps": 1, "data": {"mscmrseg": str(phantom_mscmrseg)}}
    assert main(["train", "--config", "mmsdnet-mscmrseg", "--data", str(tmp_path / "nowhere")]) == EXIT_INPUT_ERROR  # the bundled one's, too
    assert "data folder for 'mscmrseg' does not exist" in capsys.readouterr().err
    assert main(["train", "--config", "no-such-model"]) == EXIT_INPUT_ERROR
    assert "no-such-model: is not a model folder nor a known model id" in capsys.readouterr().err


def test_segment_a_pair_writes_every_output_on_its_inputs_grid(catalog, pair, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", "--lge", str(pair["lge"]), "--cine", str(pair["cine"]), "--model", "tiny-mmsdnet", "--out", str(out), "--events", "jsonl"])
    events = events_of(capsys)
    result = events[-1]
    assert code == 0 and result["type"] == "result" and result["task"] == "cardiac"
    assert_progress_moves(events, "inference")  # batch of slices by batch
    lge, cine = sitk.ReadImage(str(pair["lge"])), sitk.ReadImage(str(pair["cine"]))
    for name, reference in (("seg_fused_lge", lge), ("seg_lge", lge), ("seg_cine_aligned_to_lge", lge), ("anatomy_lge", lge),
                            ("seg_cine", cine), ("seg_fused_cine", cine), ("anatomy_cine", cine)):
        assert_same_grid(sitk.ReadImage(result["outputs"][name]), reference, name)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(result["outputs"]["tps_lge_to_cine"]), sitk.sitkVectorFloat64))
    centre = Grid.of(lge).centre
    assert np.linalg.norm(np.subtract(transform.TransformPoint(tuple(centre)), centre)) < 50  # a displacement in mm, not voxels
    assert json.loads((out / "segment.json").read_text())["outputs"] == result["outputs"]


def test_segment_abdominal_guesses_the_modality_and_reports_volumes(catalog, tmp_path, capsys):
    image, _ = abdominal_volume("CT", seed=9)
    path = write_image(image, tmp_path / "ct.nii.gz")
    assert main(["segment", "--image", str(path), "--model", "tiny-v4", "--out", str(tmp_path / "out"), "--report", "--events", "jsonl"]) == 0
    events = events_of(capsys)
    result = events[-1]
    assert_progress_moves(events, "inference")  # window by window
    assert result["modality"] == "CT" and result["modality_from"] == "intensities"
    assert set(result["volumes_ml"]) == {"liver", "right kidney", "left kidney", "spleen"}
    assert_same_grid(sitk.ReadImage(result["outputs"]["organs"]), image)
    assert "Views through each organ" in (tmp_path / "out" / "report.html").read_text()
    assert main(["segment", "--image", str(path), "--modality", "MR", "--model", "tiny-v4", "--out", str(tmp_path / "as-mr"), "--events", "jsonl"]) == 0
    warnings = [e["message"] for e in events_of(capsys) if e["type"] == "warning"]
    assert any("look like CT, but it was given as MR" in w for w in warnings)  # told, then done as asked


def test_plausibility_warnings_reach_the_events_the_summary_and_the_report(catalog, pair, tmp_path, capsys):
    """A cardiac LGE given to the abdominal model (it was segmented without a word), and a cine whose header puts
    the heart 36 mm away: the result is written, and every warning is said, kept in segment.json and shown
    first in the QA report."""
    assert main(["segment", "--image", str(pair["lge"]), "--model", "tiny-v4", "--out", str(tmp_path / "abdomen"), "--report", "--events", "jsonl"]) == 0
    warnings = [e["message"] for e in events_of(capsys) if e["type"] == "warning"]
    assert any(w.startswith(f"{pair['lge']}: is only 75 mm thick along its K axis") for w in warnings), warnings
    assert json.loads((tmp_path / "abdomen" / "segment.json").read_text())["warnings"] == warnings
    page = (tmp_path / "abdomen" / "report.html").read_text()
    assert page.index("Check before use") < page.index("Organ volumes") and "is only 75 mm thick" in page

    shifted = cardiac_pair(seed=40).cine
    direction = np.asarray(shifted.GetDirection()).reshape(3, 3)
    shifted.SetOrigin(tuple(np.asarray(shifted.GetOrigin()) + 30 * direction[:, 0] + 20 * direction[:, 1]))
    cine = write_image(shifted, tmp_path / "shifted_cine.nii.gz")
    assert main(["segment", "--lge", str(pair["lge"]), "--cine", str(cine), "--out", str(tmp_path / "heart"), "--events", "jsonl"]) == 0  # the bundled model
    (warning,) = [e["message"] for e in events_of(capsys) if e["type"] == "warning"]
    assert warning.startswith("the left ventricle lies 3") and "mm apart in the cine and the LGE" in warning
    assert json.loads((tmp_path / "heart" / "segment.json").read_text())["warnings"] == [warning]


def test_a_dicom_series_tells_the_stream_and_its_body_part(catalog, tmp_path, capsys):
    """The Modality tag of a DICOM series chooses the stream; a Body Part Examined other than the abdomen is said."""
    image, _ = abdominal_volume("MR", seed=4)
    series = write_dicom_series(sitk.Cast(image, sitk.sitkInt16), tmp_path / "series", modality="MR", tags={"0018|0015": "HEAD"})
    assert main(["segment", "--image", str(series), "--model", "tiny-v4", "--out", str(tmp_path / "out"), "--events", "jsonl"]) == 0
    events = events_of(capsys)
    assert events[-1]["modality"] == "MR" and events[-1]["modality_from"] == "DICOM tag"
    assert f"{series}: its DICOM Body Part Examined is HEAD, not the abdomen" in [e["message"] for e in events if e["type"] == "warning"]


def test_a_swapped_or_doubled_cardiac_pair_is_said(catalog, pair, tmp_path, capsys):
    """An LGE series acquired without an inversion pulse (a cine, by its header), and one file given as both inputs."""
    lge = cardiac_pair(seed=40).lge
    series = write_dicom_series(sitk.Cast(sitk.RescaleIntensity(lge, 0, 1000), sitk.sitkInt16), tmp_path / "lge", tags={"0018|0020": "GR"})
    assert main(["segment", "--lge", str(series), "--cine", str(pair["cine"]), "--out", str(tmp_path / "a"), "--events", "jsonl"]) == 0
    warnings = [e["message"] for e in events_of(capsys) if e["type"] == "warning"]
    assert f"{series}: the LGE was acquired without an inversion pulse (Scanning Sequence GR, no Inversion Time)" in warnings[0]
    summary = json.loads((tmp_path / "a" / "segment.json").read_text())
    assert summary["warnings"] == warnings
    assert Path(summary["outputs"]["segmentation"]).name == "segmentation.dcm"  # the fused LGE mask, referencing the LGE series
    assert main(["segment", "--lge", str(pair["lge"]), "--cine", str(pair["lge"]), "--out", str(tmp_path / "b"), "--events", "jsonl"]) == 0
    warnings = [e["message"] for e in events_of(capsys) if e["type"] == "warning"]
    assert f"{pair['lge']} and {pair['lge']} hold the same image: the cine and the LGE must be two acquisitions" in warnings


@pytest.mark.parametrize("task", ["cardiac", "abdominal"])
def test_report_from_a_segment_folder_is_the_page_segment_wrote_without_segmenting_again(catalog, pair, tmp_path, capsys, task):
    if task == "cardiac":
        inputs = ["--lge", str(pair["lge"]), "--cine", str(pair["cine"]), "--reference", str(pair["reference"]), "--model", "tiny-mmsdnet"]
    else:
        inputs = ["--image", str(write_image(abdominal_volume("MR", seed=6)[0], tmp_path / "t2.nii.gz")), "--model", "tiny-v4"]
    assert main(["segment", *inputs, "--out", str(tmp_path / "out"), "--report"]) == 0
    capsys.readouterr()
    assert main(["report", "--from", str(tmp_path / "out"), "--out", str(tmp_path / "again.html"), "--events", "jsonl"]) == 0
    assert (tmp_path / "again.html").read_text() == (tmp_path / "out" / "report.html").read_text()
    assert not [e for e in events_of(capsys) if e["type"] == "progress" and e["stage"] == "inference"]  # nothing was segmented
    assert main(["report", "--from", str(tmp_path), "--out", str(tmp_path / "x.html")]) == EXIT_INPUT_ERROR
    assert "holds no readable segment.json of `segment`" in capsys.readouterr().err


def test_report_of_a_pair_has_every_panel_and_the_reference_dice(catalog, pair, tmp_path, capsys):
    out = tmp_path / "qa.html"
    assert main(["report", "--lge", str(pair["lge"]), "--cine", str(pair["cine"]), "--reference", str(pair["reference"]),
                 "--model", "tiny-mmsdnet", "--out", str(out), "--events", "jsonl"]) == 0
    page = out.read_text()
    slices = sitk.ReadImage(str(pair["lge"])).GetSize()[2]
    for caption in ("LGE + fused mask", "LGE + LGE-only mask", "TPS deformation grid", "cine warped by the TPS"):
        assert page.count(f"<figcaption>{caption}") >= slices - 2, caption
    assert page.count("channel ") >= 16 and "Against the reference" in page and "HD95" in page
    assert page.count("data:image/png;base64,") > 5 * slices
    model = page[page.index("<h2>The model</h2>"):]  # the card's own figures: its validation Dice and its training curves
    assert "tiny-mmsdnet 1.0.0 (MMSDNet)" in model and "the weights of step" in model
    assert "<th>myocardium</th>" in model and "How its training went" in model


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--lge", "{tmp}/missing.nii.gz"], "missing.nii.gz: no such file"),
        (["--lge", "{lge}", "--model", "no-such-model"], "no-such-model: is not a model folder nor a known model id"),
        (["--lge", "{lge}", "--model", "tiny-v4"], "is a DualStreamFCN model (for abdominal images); the cardiac task needs a MMSDNet model"),
        (["--image", "{lge}", "--model", "tiny-mmsdnet"], "is a MMSDNet model (for cardiac images)"),
        (["--lge", "{ct}"], "as a CT in HU; the LGE must be a cardiac MR image"),
        (["--image", "{ct_slice}"], "ct_slice.nii.gz: is 1 voxel(s), 5 mm, along its K axis: a slice, not a volume"),
        (["--lge", "{lge}", "--reference", "{classes}"], "classes.nii.gz: mask has unexpected label value(s) [1, 2]; expected 0 and 200 (myocardium)"),
        (["--lge", "{lge}", "--reference", "{empty}"], "empty.nii.gz: is empty; a reference LGE mask marks"),
        (["--lge", "{lge}", "--reference", "{rv_only}"], "rv_only.nii.gz: marks only [600]; a reference LGE mask marks 200 (myocardium)"),
        (["--lge", "{lge}", "--reference", "{cine}"], "cine.nrrd: mask has non-integer values; a label map holds whole numbers"),
        (["--lge", "{lge}", "--reference", "{cine_int}"], "an intensity image, not a label map; expected 0 and 200 (myocardium)"),
        (["--lge", "{lge}", "--reference", "{elsewhere}"], "elsewhere.nii.gz: marks structures outside the LGE's field of view in physical space"),
        (["--image", "{ct}", "--reference", "{lge}"], "--reference: is a reference LGE mask, but no --lge was given"),
        (["--lge", "{blank}", "--cine", "{cine}"], "blank.nii.gz: is blank: every voxel has the same value 0"),
        (["--lge", "{lge}", "--cine", "{blank}"], "blank.nii.gz: is blank"),
        (["--image", "{blank}"], "blank.nii.gz: is blank"),
        (["--lge", "{lge}", "--image", "{ct}"], "cannot be combined"),
        (["--lge", "{lge}", "--mirror"], "--mirror: is test-time mirroring of an abdominal --image"),
        (["--cine", "{cine}", "--report"], "the cardiac QA report shows the LGE"),
        (["--lge", "{lge}", "--device", "cuda"], "no CUDA device is available"),
    ],
)
def test_segment_refuses_bad_input_in_one_line(catalog, pair, tmp_path, capsys, arguments, message):
    if "cuda" in arguments and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    ct = write_image(abdominal_volume("CT", seed=1)[0], tmp_path / "ct.nii.gz")
    ct_slice = write_image(read_image(ct)[:, :, 5:6], tmp_path / "ct_slice.nii.gz")
    mask = read_image(pair["reference"])
    classes = write_image(sitk.Cast(mask == 200, sitk.sitkUInt8) + 2 * sitk.Cast(mask == 500, sitk.sitkUInt8), tmp_path / "classes.nii.gz")
    empty = write_image(mask * 0, tmp_path / "empty.nii.gz")
    rv_only = write_image(sitk.Cast(mask > 0, sitk.sitkUInt16) * 600, tmp_path / "rv_only.nii.gz")
    moved = sitk.Image(mask)
    moved.SetOrigin([o + 500.0 for o in mask.GetOrigin()])  # the same mask, half a metre away
    elsewhere = write_image(moved, tmp_path / "elsewhere.nii.gz")
    blank = write_image(read_image(pair["lge"]) * 0, tmp_path / "blank.nii.gz")
    cine_int = write_image(sitk.Cast(read_image(pair["cine"]) * 1000, sitk.sitkInt16), tmp_path / "cine_int.nii.gz")  # as a scanner stores it
    values = {"tmp": tmp_path, "lge": pair["lge"], "cine": pair["cine"], "ct": ct, "ct_slice": ct_slice, "classes": classes, "empty": empty,
              "rv_only": rv_only, "elsewhere": elsewhere, "blank": blank, "cine_int": cine_int}
    code = main(["segment", *(a.format(**values) for a in arguments), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("case", BAD_FILES)
def test_segment_refuses_every_bad_file_with_one_line_and_writes_nothing(catalog, tmp_path, capsys, case):
    path, message = bad_file(case, tmp_path)
    role = "--cine" if case == "4-D where 3-D is needed" else "--lge"  # a 4-D file is a cine; take a frame that does not exist
    extra = ["--cine-frame", "5"] if role == "--cine" else []
    code = main(["segment", role, str(path), *extra, "--out", str(tmp_path / "out"), "--model", "tiny-mmsdnet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_INPUT_ERROR and len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and "Traceback" not in err, err
    if role == "--lge":
        assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_segment_never_overwrites_an_input_and_needs_a_writable_folder(catalog, pair, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    lge = folder / "seg_lge.nii.gz"  # the name of one of segment's outputs
    shutil.copy(pair["lge"], lge)
    before = lge.read_bytes()
    assert main(["segment", "--lge", str(lge), "--model", "tiny-mmsdnet", "--out", str(folder)]) == EXIT_INPUT_ERROR
    assert "is an input; writing the output there would overwrite it" in capsys.readouterr().err
    assert lge.read_bytes() == before
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["segment", "--lge", str(pair["lge"]), "--model", "tiny-mmsdnet", "--out", str(blocker / "out")]) == EXIT_INPUT_ERROR
    assert "output folder cannot be created" in capsys.readouterr().err


def test_a_tampered_or_truncated_model_is_refused_and_listed_as_broken(catalog, pair, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(catalog["cardiac"], broken)
    weights = broken / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert main(["segment", "--lge", str(pair["lge"]), "--model", str(broken), "--out", str(tmp_path / "out")]) == EXIT_INPUT_ERROR
    assert "does not match the sha256 in its card" in capsys.readouterr().err
    assert main(["models", "--events", "jsonl"]) == 0
    listed = {m["id"]: m for m in events_of(capsys)[-1]["models"]}
    assert listed["tiny-mmsdnet"]["status"] == "ok" and listed["tiny-v4"]["architecture"] == "DualStreamFCN"
    copy = catalog["user"] / "tampered"
    shutil.copytree(broken, copy)
    try:
        assert main(["models"]) == EXIT_INPUT_ERROR
        assert "failed its check: sha256 mismatch" in capsys.readouterr().err
    finally:
        shutil.rmtree(copy)


def test_evaluate_scores_pairs_and_folders(tmp_path, capsys):
    pair = cardiac_pair(seed=3)
    for folder in ("truth", "pred"):
        (tmp_path / folder).mkdir()
    truth = write_image(pair.lge_mask, tmp_path / "truth" / "p1.nii.gz")
    write_image(pair.lge_mask, tmp_path / "pred" / "p1.nii.gz")
    assert main(["evaluate", "--predictions", str(tmp_path / "pred"), "--references", str(tmp_path / "truth"), "--out", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())["summary"]
    assert "myocardium       1.000 ± 0.000" in capsys.readouterr().err  # the table a person reads
    assert summary["myocardium"]["dice_mean"] == 1.0 and summary["left ventricle"]["hd95_mm_mean"] == 0.0
    shrunk = sitk.GetArrayFromImage(sitk.BinaryErode(pair.lge_mask == 500, [3, 3, 0]))
    eroded = sitk.GetImageFromArray(shrunk.astype(np.uint16) * 500)
    eroded.CopyInformation(pair.lge_mask)
    worse = write_image(eroded, tmp_path / "worse.nii.gz")
    assert main(["evaluate", "--prediction", str(worse), "--reference", str(truth), "--structures", "left ventricle", "--events", "jsonl"]) == 0
    scored = events_of(capsys)[-1]["summary"]
    assert list(scored) == ["left ventricle"] and 0.3 < scored["left ventricle"]["dice_mean"] < 1
    assert main(["evaluate", "--prediction", str(worse)]) == EXIT_INPUT_ERROR
    elsewhere = sitk.Image(pair.lge_mask)
    elsewhere.SetOrigin((5000.0, 0.0, 0.0))
    far = write_image(elsewhere, tmp_path / "far.nii.gz")
    assert main(["evaluate", "--prediction", str(far), "--reference", str(truth)]) == EXIT_INPUT_ERROR
    assert "does not overlap its reference" in capsys.readouterr().err


def test_help_reads_for_every_command():
    completed = subprocess.run([sys.executable, "-m", "crossmodal", "--help"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "exit codes" in completed.stdout and "segment" in completed.stdout
    for command in ("segment", "train", "evaluate", "report", "models", "reproduce", "bench"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
