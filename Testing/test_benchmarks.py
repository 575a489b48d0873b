"""Evaluation commands under crossmodal.benchmarks that measure accuracy, run end to end on phantoms."""

import json

from crossmodal.benchmarks import misalignment


def test_the_misalignment_benchmark_scores_every_pair_at_every_shift_with_and_without_pre_alignment(models, phantom_mscmrseg, tmp_path):
    out = tmp_path / "misalignment.json"
    assert misalignment.main(["--data", str(phantom_mscmrseg), "--bundle", str(models["cardiac"]), "--shifts", "0", "25", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["patients"]) == 7 and len(report["runs"]) == 7 * 2 * 2
    assert set(report["summary"]) == {"as given 0 mm", "as given 25 mm", "pre-aligned 0 mm", "pre-aligned 25 mm"}
    assert not any(r["prealigned"] for r in report["runs"] if r["setting"] == "as given")
    assert all(0 <= v <= 1 for r in report["runs"] for result in ("fused", "lge_only") for v in r[result].values())
    # Pre-alignment moves only the cine's sampling: the LGE-only mask is the same with and without it.
    for patient in report["patients"]:
        for shift in (0, 25):
            assert len({json.dumps(r["lge_only"]) for r in report["runs"] if r["patient"] == patient and r["shift_mm"] == shift}) == 1
