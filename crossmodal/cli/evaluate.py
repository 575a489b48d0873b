"""``evaluate``: predicted label maps against references, Dice and HD95 per structure, as a table and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.events import Events, JsonlEvents
from crossmodal.image_io import IMAGE_SUFFIXES, atomic_output, image_suffix, read_image
from crossmodal.labels import ABDOMEN, MSCMRSEG, LabelSet
from crossmodal.scoring import score_images

LABEL_SETS = {"cardiac": MSCMRSEG, "abdomen": ABDOMEN}


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("evaluate", parents=[common], help="Dice and HD95 of predictions against reference masks",
                                 description="Score label maps against references, per structure, on the reference's grid "
                                 "(a prediction on another grid is resampled onto it, nearest neighbour, in physical space).")
    pairs = parser.add_argument_group("one or more pairs, or two folders matched by file name")
    pairs.add_argument("--prediction", type=Path, action="append", default=[], help="predicted label map (repeatable)")
    pairs.add_argument("--reference", type=Path, action="append", default=[], help="its reference (repeatable, same order)")
    pairs.add_argument("--predictions", type=Path, help="folder of predictions")
    pairs.add_argument("--references", type=Path, help="folder of references with the same file names")
    parser.add_argument("--labels", choices=("auto", *LABEL_SETS), default="auto",
                        help="label values and names: cardiac (200 MYO, 500 LV, 600 RV) or abdomen (1 liver .. 4 spleen)")
    parser.add_argument("--structures", nargs="+", help="score only these structures (names, e.g. myocardium \"left ventricle\")")
    parser.add_argument("--out", type=Path, help="JSON file for the per-case and summary scores")
    parser.set_defaults(run=run_evaluate)


def matched_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    if args.predictions or args.references:
        if not (args.predictions and args.references):
            raise InputError("--predictions/--references", "give both folders")
        for folder in (args.predictions, args.references):
            if not folder.is_dir():
                raise InputError(folder, "folder does not exist")
        references = {p.name: p for p in sorted(args.references.iterdir()) if image_suffix(p)}
        pairs = [(p, references[p.name]) for p in sorted(args.predictions.iterdir()) if p.name in references]
        if not pairs:
            raise InputError(args.predictions, f"no file name matches one in {args.references} (images: {', '.join(IMAGE_SUFFIXES)})")
        return pairs
    if not args.prediction or len(args.prediction) != len(args.reference):
        raise InputError("--prediction/--reference", f"give them in pairs ({len(args.prediction)} predictions, {len(args.reference)} references)")
    return list(zip(args.prediction, args.reference))


def choose_labels(choice: str, reference: np.ndarray, source: Path) -> LabelSet:
    if choice != "auto":
        return LABEL_SETS[choice]
    found = {int(v) for v in np.unique(reference)} - {0}
    for label_set in LABEL_SETS.values():
        if found <= set(label_set.values):
            return label_set
    raise InputError(source, f"has label values {sorted(found)} that match no known label set; pass --labels")


def score_case(prediction: Path, reference: Path, choice: str, structures: list[str] | None = None) -> dict:
    truth = read_image(reference)
    labels = choose_labels(choice, sitk.GetArrayViewFromImage(truth), reference)
    found = read_image(prediction)
    labels.check(sitk.GetArrayViewFromImage(found), str(prediction))
    if structures:
        try:
            labels = labels.subset(*structures)
        except KeyError as error:
            raise InputError("--structures", error.args[0]) from None
    return score_images(found, truth, labels, prediction, present_only=True)


def run_evaluate(args: argparse.Namespace, events: Events) -> int:
    pairs = matched_pairs(args)
    cases = {}
    for i, (prediction, reference) in enumerate(pairs, 1):
        cases[str(prediction)] = score_case(prediction, reference, args.labels, args.structures)
        events.progress("evaluating", i, len(pairs))
    structures = sorted({s for case in cases.values() for s in case})
    summary = {}
    for s in structures:
        values = {m: [case[s][m] for case in cases.values() if s in case] for m in ("dice", "hd95_mm")}
        summary[s] = {f"{m}_{stat}": float(f(v)) for m, v in values.items() for stat, f in (("mean", np.mean), ("std", np.std))} | {"cases": len(values["dice"])}
    report = {"cases": cases, "summary": summary}
    if args.out:
        if not args.out.parent.is_dir():
            raise InputError(args.out.parent, "output folder does not exist")
        with atomic_output(args.out) as partial:
            partial.write_text(json.dumps(report, indent=1) + "\n")
    if not isinstance(events, JsonlEvents):
        sys.stderr.write(f"{'structure':<16} {'Dice':>14} {'HD95 (mm)':>16} cases\n")
        for s, row in summary.items():
            sys.stderr.write(f"{s:<16} {row['dice_mean']:.3f} ± {row['dice_std']:.3f} {row['hd95_mm_mean']:>8.2f} ± {row['hd95_mm_std']:<6.2f} {row['cases']}\n")
    events.result({"json": str(args.out)} if args.out else {}, summary=summary)
    return 0
