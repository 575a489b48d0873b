"""The demo's scoring step, which `make demo` (the first thing a new user runs) prints."""

from __future__ import annotations

from crossmodal.demo import COMPARED, segment_and_score
from crossmodal.phantoms import write_mscmrseg_phantoms


def test_the_demo_segments_held_out_pairs_and_scores_fused_against_lge_only(catalog, tmp_path):
    data = write_mscmrseg_phantoms(tmp_path / "test", labelled=2, first=101)
    cases = [(f"patient{p}", data / f"patient{p}_DE.nii.gz", data / f"patient{p}_C0.nii.gz", data / f"patient{p}_DE_manual.nii.gz") for p in (101, 102)]
    scores = segment_and_score("tiny-mmsdnet", cases, tmp_path / "results")
    assert set(scores) == set(COMPARED) == {"fused LGE", "LGE"}
    for row in scores.values():
        assert row["myocardium"]["cases"] == 2 and 0.0 <= row["left ventricle"]["dice_mean"] <= 1.0
    assert (tmp_path / "results" / "patient101" / "report.html").exists()
