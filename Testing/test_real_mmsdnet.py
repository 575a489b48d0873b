"""MMSDNet pieces on real MS-CMRSeg headers and images (../shared/data/mscmrseg); skipped when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import shared_data

from crossmodal.bundles import ModelCard, load_bundle
from crossmodal.cardiac_inference import displacement_transform, segment_cardiac
from crossmodal.datasets import discover_mscmrseg
from crossmodal.geometry import Grid
from crossmodal.image_io import read_image
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.metrics import dice
from crossmodal.nets.mmsdnet import MMSDNet, MMSDNetConfig
from crossmodal.pairing import PairingConfig, write_back
from crossmodal.reproduce.registration_baselines import copy_masks, register_masks
from crossmodal.training.cardiac_data import load_patient
from crossmodal.training.evaluation import score_labels

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def case():
    return next(c for c in discover_mscmrseg(shared_data("mscmrseg")) if c.patient == 5)


def test_inference_on_left_handed_real_headers_keeps_every_grid(case):
    """The MS-CMRSeg headers have det -1 directions: outputs must still land on the inputs' grids,
    and an untrained (identity) alignment must displace only through-plane, to the nearest cine slice."""
    lge, cine = case.read("DE"), case.read("C0")
    card = ModelCard("t", "0", "MMSDNet", {}, ["cine", "LGE"], {"size": 96, "spacing_mm": 2.0}, ModelCard.label_entries(CARDIAC_MYO_LV))
    torch.manual_seed(0)
    result = segment_cardiac(MMSDNet(MMSDNetConfig(filters=4)), card, lge=lge, cine=cine, prealign_mm=None)
    assert Grid.of(result.masks["fused LGE"]) == Grid.of(lge) and Grid.of(result.masks["fused cine"]) == Grid.of(cine)
    field = sitk.GetArrayFromImage(result.displacement)
    normal = Grid.of(lge).normal
    for i, sample in enumerate(result.stack.slices):
        expected = normal * sample.through_plane_mm if sample.paired else np.zeros(3)
        assert np.allclose(field[i], expected, atol=1e-3)
    point = result.stack.common_grid.index_to_point([40, 50, 2])
    assert np.allclose(displacement_transform(result).TransformPoint(point), point + field[2, 50, 40], atol=1e-3)


def shifted_cine_case(case, folder: Path, shift_mm: tuple[float, float]):
    """``case`` copied into ``folder`` with its cine (image and mask) moved in-plane by ``shift_mm`` along the
    cine's own row and column directions: a header offset like another site's export or a far breath-hold."""
    for modality, files in (("C0", case.images), ("C0", case.masks)):
        from crossmodal.benchmarks.misalignment import moved_in_plane

        sitk.WriteImage(moved_in_plane(read_image(files[modality]), np.asarray(shift_mm, float)), str(folder / files[modality].name))
    for path in (case.images["DE"], case.masks["DE"]):
        (folder / path.name).symlink_to(path.resolve())
    (shifted,) = discover_mscmrseg(folder)
    return shifted


def test_registration_baseline_repairs_a_large_shift_that_copying_cannot(case, tmp_path):
    """Patient 5's cine lies within a few mm of its LGE (corrected headers: copying the mask works); moved by
    36 mm in-plane on purpose, copying fails and the ANTs registration baseline brings the mask back."""
    def native(patient, labels):
        return score_labels(patient, sitk.GetArrayFromImage(write_back(patient.stack, labels, "LGE")))["volume"]

    config = PairingConfig(spacing_mm=2.0, size=96)
    aligned = load_patient(case, config)
    assert native(aligned, copy_masks(aligned))["myocardium"] > 0.4  # the corrected geometry: hearts a few mm apart
    patient = load_patient(shifted_cine_case(case, tmp_path, (30.0, -20.0)), config)
    copied, registered = native(patient, copy_masks(patient)), native(patient, register_masks(patient, spacing_mm=2.0))
    assert copied["myocardium"] < 0.2
    assert registered["myocardium"] > copied["myocardium"] + 0.15 and registered["left ventricle"] > copied["left ventricle"] + 0.2, (copied, registered)


BUNDLE = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "mmsdnet-mscmrseg"


def test_the_bundled_model_segments_a_held_out_patient():
    """Patient 33 was held out of the bundle's training (its card says so): fused LGE masks on the native grid."""
    card, network = load_bundle(BUNDLE)
    assert 33 in card.validation["patients"] and 33 not in card.training["patients"]
    case = next(c for c in discover_mscmrseg(shared_data("mscmrseg")) if c.patient == 33)
    result = segment_cardiac(network, card, lge=case.read("DE"), cine=case.read("C0"))
    reference = CARDIAC_MYO_LV.to_classes(sitk.GetArrayFromImage(case.read_mask("DE")), ignore=(600,))
    found = CARDIAC_MYO_LV.to_classes(sitk.GetArrayFromImage(result.masks["fused LGE"]))
    scores = dice(found, reference, [1, 2])
    assert scores[1] > 0.65 and scores[2] > 0.8, scores


def test_a_cine_a_few_centimetres_off_is_moved_onto_the_lge_heart_before_fusion(tmp_path):
    """Held-out patient 33 with its cine moved 25 mm in-plane on purpose: as given the fused mask loses myocardium
    (0.07 Dice: the bundle's LGE U-Net steadies it, MMSDNet alone lost more); pre-aligned on the left ventricles of the
    single-modality masks it is as good as unmoved. The pair as acquired (a few mm apart) is left to the spatial
    transformer."""
    from crossmodal.benchmarks.misalignment import dice_on_lge, moved_in_plane

    card, network = load_bundle(BUNDLE)
    case = next(c for c in discover_mscmrseg(shared_data("mscmrseg")) if c.patient == 33)
    lge, cine, reference = case.read("DE"), case.read("C0"), case.read_mask("DE")
    as_acquired = segment_cardiac(network, card, lge=lge, cine=cine)
    assert not as_acquired.prealigned and 2 < np.linalg.norm(as_acquired.cine_shift_mm) < 8  # a breath-hold's offset: the TPS's to handle
    unmoved = dice_on_lge(as_acquired.masks["fused LGE"], reference)
    shift = np.array([20.0, -15.0])
    far = moved_in_plane(cine, shift)
    as_given = segment_cardiac(network, card, lge=lge, cine=far, prealign_mm=None)
    prealigned = segment_cardiac(network, card, lge=lge, cine=far)
    assert not as_given.prealigned and prealigned.prealigned
    assert 20 < np.linalg.norm(prealigned.cine_shift_mm) < 30
    fused_as_given, fused_prealigned = (dice_on_lge(r.masks["fused LGE"], reference) for r in (as_given, prealigned))
    assert fused_as_given["myocardium"] < unmoved["myocardium"] - 0.05, (fused_as_given, unmoved)
    assert fused_prealigned["myocardium"] > unmoved["myocardium"] - 0.03 and fused_prealigned["left ventricle"] > unmoved["left ventricle"] - 0.03


def test_segment_reports_the_moved_cine_and_report_from_its_folder_draws_the_same_page(tmp_path):
    """Through the command: segment.json says how far the cine's heart lay and that it was moved; the QA page
    says so, and `report --from` (no model run) rebuilds the same page from what segment wrote."""
    import json

    from crossmodal.cli import main

    case = next(c for c in discover_mscmrseg(shared_data("mscmrseg")) if c.patient == 33)
    (tmp_path / "moved").mkdir()
    moved = shifted_cine_case(case, tmp_path / "moved", (18.0, 12.0))
    out = tmp_path / "out"
    assert main(["segment", "--lge", str(moved.images["DE"]), "--cine", str(moved.images["C0"]), "--model", str(BUNDLE),
                 "--out", str(out), "--report"]) == 0
    offset = json.loads((out / "segment.json").read_text())["cine_left_ventricle_offset_mm"]
    assert offset["cine_moved_before_fusion"] and 15 < offset["in_plane"] < 30
    page = (out / "report.html").read_text()
    assert "the cine was moved onto the LGE's heart before alignment and fusion" in page
    assert main(["report", "--from", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text() == page
