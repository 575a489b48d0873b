"""The first thing to run: ``make demo`` (or ``python -m crossmodal.demo``).

Without data it makes synthetic cine + LGE pairs, trains a small MMSDNet on them for a minute or two
on the CPU, segments held-out pairs, writes their visual QA reports and prints the Dice reached.
With ``--data <MS-CMRSeg folder>`` it runs the bundled model on the real patients that model never
trained on instead. Everything goes through the same ``crossmodal`` commands a user would type.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from crossmodal.catalog import find_model
from crossmodal.cli import main as crossmodal
from crossmodal.datasets import discover_mscmrseg
from crossmodal.output_set import output_key
from crossmodal.phantoms import write_mscmrseg_phantoms
from crossmodal.segment_outputs import MASK_TITLES, REPORT_FILE, SegmentOutput, mask_file

DEMO_RECIPE = {
    "architecture": "MMSDNet", "id": "demo-mmsdnet-phantoms", "size": 64, "spacing_mm": 3.0, "filters": 8,
    "steps": 250, "batch_size": 8, "learning_rate": 0.002, "warmup_steps": 25, "final_learning_rate": 0.05,
    "validate_every": 25, "checkpoint_every": 50, "validation": 2,
}
"""Small enough for a 2-core CPU in about four and a half minutes; the phantoms' hearts are simpler than real
ones. The bundle's warm-up and cosine decay. Figures differ between seeds (``--seed``) and between CPUs
(their float rounding differs and a few hundred steps amplify it): measured, the alignment is learnt with
some seeds and not with others in 250 steps (see the README)."""
COMPARED = ("fused LGE", "LGE")
"""The masks the demo scores: what fusing the cine buys over the LGE alone."""
TRAIN_LABELLED, TRAIN_CINE_ONLY, TEST_PATIENTS, FIRST_TEST = 8, 2, 3, 101


def run(command: list[str]) -> None:
    print(f"\n$ crossmodal {' '.join(command)}", flush=True)
    code = crossmodal(command)
    if code != 0:
        raise SystemExit(f"demo: `crossmodal {command[0]}` failed with exit code {code}")


def segment_and_score(model: str, cases: list[tuple[str, Path, Path, Path]], out: Path) -> dict:
    """Segment every (name, LGE, cine, reference) with a QA report; score the fused and the LGE-only masks."""
    for name, lge, cine, reference in cases:
        run(["segment", "--lge", str(lge), "--cine", str(cine), "--reference", str(reference), "--model", model, "--out", str(out / name), "--report"])
    scores = {}
    for output in COMPARED:
        pairs = [arg for name, _, _, reference in cases for arg in ("--prediction", str(SegmentOutput.read(out / name).mask(output)), "--reference", str(reference))]
        scored = out / f"dice_{output_key(mask_file(output))}.json"
        run(["evaluate", *pairs, "--labels", "cardiac", "--structures", "myocardium", "left ventricle", "--out", str(scored)])
        scores[output] = json.loads(scored.read_text())["summary"]
    return scores


def phantom_demo(out: Path, seed: int = 0) -> tuple[dict, list[Path]]:
    data = out / "phantoms"
    print(f"Writing synthetic cine + LGE pairs to {data} ...", flush=True)
    write_mscmrseg_phantoms(data / "train", labelled=TRAIN_LABELLED, unlabelled=TRAIN_CINE_ONLY)
    write_mscmrseg_phantoms(data / "test", labelled=TEST_PATIENTS, first=FIRST_TEST)
    recipe = out / "demo-recipe.json"
    recipe.write_text(json.dumps({**DEMO_RECIPE, "seed": seed}, indent=1) + "\n")
    run(["train", "--config", str(recipe), "--data", str(data / "train"), "--out", str(out / "model")])
    cases = [(f"patient{p}", data / "test" / f"patient{p}_DE.nii.gz", data / "test" / f"patient{p}_C0.nii.gz", data / "test" / f"patient{p}_DE_manual.nii.gz")
             for p in range(FIRST_TEST, FIRST_TEST + TEST_PATIENTS)]
    return segment_and_score(str(out / "model"), cases, out / "results"), [out / "results" / c[0] / REPORT_FILE for c in cases]


def real_data_demo(data: Path, out: Path) -> tuple[dict, list[Path]]:
    from crossmodal.bundles import read_card

    model = find_model(None, "cardiac")
    held_out = read_card(model).validation.get("patients", [])
    cases = [(f"patient{c.patient}", c.images["DE"], c.images["C0"], c.masks["DE"]) for c in discover_mscmrseg(data)
             if c.is_pair and c.has_mask("DE") and c.patient in held_out]
    if not cases:
        raise SystemExit(f"demo: {data} holds none of the bundled model's held-out patients {held_out} with LGE masks")
    print(f"Bundled model {model.name}: segmenting its held-out patients {held_out} from {data}", flush=True)
    return segment_and_score(str(model), cases, out / "results"), [out / "results" / c[0] / REPORT_FILE for c in cases]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="demo folder (its earlier contents are replaced)")
    parser.add_argument("--data", type=Path, help="an MS-CMRSeg folder: run the bundled model on it instead of training on phantoms")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom training (its weights and batches)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    scores, reports = real_data_demo(args.data, args.out) if args.data else phantom_demo(args.out, args.seed)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Dice on the LGE (mean over {len(reports)} held-out pairs):")
    for output in COMPARED:
        row = scores[output]
        print(f"  {MASK_TITLES[output]:<20} " + "  ".join(f"{s} {row[s]['dice_mean']:.3f}" for s in ("myocardium", "left ventricle") if s in row))
    print("QA reports (open in a browser):")
    for report in reports:
        print(f"  {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
