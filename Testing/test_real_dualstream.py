"""The bundled dual-stream model on its held-out real subjects (BTCV CT, CHAOS MR); skipped when the data are absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_data

from crossmodal.abdominal_inference import segment_abdominal
from crossmodal.bundles import load_bundle
from crossmodal.datasets import read_nnunet_dataset
from crossmodal.geometry import Grid
from crossmodal.metrics import dice

pytestmark = pytest.mark.realdata
MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"


@pytest.fixture(scope="module", params=["dualstream-v4-abdomen", "dualstream-v4x2-abdomen"])
def bundle(request):
    """Each bundled dual-stream model: the single network and the seed ensemble."""
    folder = MODELS / request.param
    if not (folder / "card.json").exists():
        pytest.skip(f"{folder} is not there")
    return load_bundle(folder)


@pytest.mark.parametrize(("folder", "modality"), [("btcv_ct", "CT"), ("chaos_t2", "MR")])
def test_the_bundled_model_segments_its_held_out_subjects_on_their_own_grids(bundle, folder, modality):
    card, network = bundle
    held_out = [case for case, m in card.validation["subjects"].items() if m == modality]
    dataset = read_nnunet_dataset(shared_data(folder))
    case = next(c for c in dataset.cases if c.case_id == held_out[0])
    image = sitk.ReadImage(str(case.images[0]))
    reference = sitk.GetArrayFromImage(dataset.read_label(case))
    raw = segment_abdominal(network, card, image, source=str(case.images[0]), keep_components=False)
    result = segment_abdominal(network, card, image, source=str(case.images[0]))
    assert result.modality == modality and Grid.of(result.labels) == Grid.of(image)
    raw_scores = dice(sitk.GetArrayFromImage(raw.labels), reference, [1, 2, 3, 4])
    scores = dice(sitk.GetArrayFromImage(result.labels), reference, [1, 2, 3, 4])  # what the card's validation measured
    assert np.mean(list(scores.values())) == pytest.approx(np.mean(list(card.validation["dice_native"][case.case_id].values())), abs=0.02)
    assert all(scores[v] >= raw_scores[v] - 0.005 for v in scores), (scores, raw_scores)  # one piece per organ: never worse here
    assert scores[1] > 0.7, scores  # the liver, the largest organ
