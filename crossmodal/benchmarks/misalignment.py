"""How far off a cine may lie before the fused mask loses to the LGE-only one, with and without pre-alignment.

    python -m crossmodal.benchmarks.misalignment --data ../shared/data/mscmrseg --out bench/misalignment.json \\
        [--bundle Resources/Models/mmsdnet-mscmrseg] [--shifts 0 5 10 20 30]

Every fully labelled cine + LGE pair is segmented through ``segment_cardiac`` with its cine moved on
purpose in its own slice plane (a header offset or a far breath-hold; one random direction per
patient) by each of ``--shifts`` mm, once without and once with the cine pre-aligned onto the LGE's
left ventricle. Reported: Dice of the fused and of the LGE-only mask on the native LGE grid, per
patient and on average, and whether the bundle trained on the patient. The LGE-only mask is the
reference each fused figure is compared with, in the same run (it moves a little with the cine: the
crop is centred between the two fields of view).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.benchmarks import write_report
from crossmodal.bundles import load_bundle
from crossmodal.cardiac_inference import PREALIGN_MM, segment_cardiac
from crossmodal.datasets import discover_mscmrseg
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.scoring import on_reference_grid, structure_dice

SETTINGS = {"as given": None, "pre-aligned": PREALIGN_MM}
"""Name -> ``segment_cardiac``'s ``prealign_mm``."""


def moved_in_plane(image: sitk.Image, shift_mm: np.ndarray) -> sitk.Image:
    """A copy of ``image`` placed ``shift_mm`` (along its own row and column directions) away."""
    moved = sitk.Image(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    moved.SetOrigin(tuple(np.asarray(image.GetOrigin()) + direction[:, :2] @ shift_mm))
    return moved


def dice_on_lge(mask: sitk.Image, reference: sitk.Image) -> dict[str, float]:
    return structure_dice(on_reference_grid(mask, reference, "mask"), sitk.GetArrayViewFromImage(reference), CARDIAC_MYO_LV)


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="MS-CMRSeg folder")
    parser.add_argument("--bundle", type=Path, default=Path("Resources/Models/mmsdnet-mscmrseg"))
    parser.add_argument("--shifts", nargs="+", type=float, default=[0, 5, 10, 20, 30], help="in-plane cine shifts (mm)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    card, network = load_bundle(args.bundle)
    trained_on = set(card.training.get("patients", []))
    cases = [c for c in discover_mscmrseg(args.data) if c.is_pair and c.has_mask("DE")]
    rows: list[dict] = []
    for done, case in enumerate(cases, 1):
        lge, cine, reference = case.read("DE"), case.read("C0"), case.read_mask("DE")
        angle = np.random.default_rng(case.patient).uniform(0, 2 * np.pi)
        for shift in args.shifts:
            vector = shift * np.array([np.cos(angle), np.sin(angle)])
            for setting, prealign in SETTINGS.items():
                result = segment_cardiac(network, card, lge=lge, cine=moved_in_plane(cine, vector), prealign_mm=prealign)
                offset = None if result.cine_shift_mm is None else float(np.linalg.norm(result.cine_shift_mm))
                rows.append({"patient": case.patient, "trained_on": case.patient in trained_on, "shift_mm": shift, "setting": setting,
                             "measured_offset_mm": offset, "prealigned": result.prealigned,
                             "fused": dice_on_lge(result.masks["fused LGE"], reference), "lge_only": dice_on_lge(result.masks["LGE"], reference)})
        events.progress("patients", done, len(cases))
    summary = {}
    for setting in SETTINGS:
        for shift in args.shifts:
            chosen = [r for r in rows if r["setting"] == setting and r["shift_mm"] == shift]
            summary[f"{setting} {shift:g} mm"] = {
                f"{result} {structure}": float(np.mean([r[result][structure] for r in chosen]))
                for result in ("fused", "lge_only") for structure in CARDIAC_MYO_LV.names}
    write_report({"bundle": card.id, "prealign_mm": PREALIGN_MM, "patients": [c.patient for c in cases], "summary": summary, "runs": rows},
                 args.out, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
