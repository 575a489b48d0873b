"""The question a user asks of the bundled MMSDNet: does it beat a plain U-Net on the LGE alone?

    python -m crossmodal.reproduce.bundle_baseline --bundle Resources/Models/mmsdnet-mscmrseg \\
        --data ../shared/data/mscmrseg --out results/bundle-baseline

Trains UNet-single with everything the bundle's own recipe fixes: the same patients (every LGE mask
the bundle trained with, pairs and LGE-only patients alike), the same common grid, steps, batch,
learning rate, warm-up and decay, augmentation, and checkpoint choice on the same validation
patients; then scores it on those patients' native LGE grid beside the bundle's card. A U-Net step
costs a fraction of an MMSDNet step, so the U-Net's CPU budget is at most the bundle's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from crossmodal.bundles import RECIPE, read_card
from crossmodal.devices import DEVICES, describe_device, pick_device
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.reproduce.cardiac_baselines import UNetMethod
from crossmodal.reproduce.common import write_outputs
from crossmodal.training.cardiac_data import build_samples
from crossmodal.training.evaluation import predict_patient, score_native, validation_score
from crossmodal.training.recipes import MMSDNetRecipe, read_recipe
from crossmodal.training.trainer import train

STRUCTURES = (*CARDIAC_MYO_LV.names, "mean")
BUNDLE_OUTPUTS = {"MMSDNet-multi": "bundle, fused", "MMSDNet-single": "bundle, LGE only"}


def markdown(rows: dict[str, dict[str, dict[str, float]]], meta: dict) -> str:
    patients = sorted(rows["UNet-single"], key=int)
    lines = [f"# Bundled {meta['bundle']} against UNet-single on its validation patients ({meta['device']})", "",
             f"UNet-single: {meta['filters']} filters, {meta['steps']} steps of {meta['batch_size']} on the bundle's split, "
             f"{meta['seconds']:.0f} s (the bundle: {meta['bundle_seconds']} s); checkpoint at step {meta['best_step']}.", "",
             "| result | " + " | ".join(f"{p} {s}" for p in patients for s in STRUCTURES) + " | mean MYO | mean LV |",
             "|---" * (1 + len(patients) * len(STRUCTURES) + 2) + "|"]
    for name, per_patient in rows.items():
        cells = [f"{per_patient[p][s]:.3f}" for p in patients for s in STRUCTURES]
        cells += [f"{np.mean([per_patient[p][s] for p in patients]):.3f}" for s in CARDIAC_MYO_LV.names]
        lines.append(f"| {BUNDLE_OUTPUTS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "Dice per volume on the native LGE grid.", ""])


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="an MMSDNet bundle (its recipe.json and card.json)")
    parser.add_argument("--data", required=True, type=Path, help="the MS-CMRSeg folder the bundle trained on")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--filters", type=int, default=32, help="U-Net width (first level)")
    parser.add_argument("--steps", type=int, help="override the recipe's steps")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    args = parser.parse_args(argv)

    recipe = read_recipe(args.bundle / RECIPE, data={"mscmrseg": str(args.data)}, steps=args.steps)
    if not isinstance(recipe, MMSDNetRecipe):
        raise SystemExit(f"{args.bundle}: not an MMSDNet bundle")
    card, device = read_card(args.bundle), pick_device(args.device)
    split = recipe.split(lambda *_: None)
    torch.manual_seed(recipe.seed)
    method = UNetMethod(len(CARDIAC_MYO_LV.labels) + 1, args.filters, 4, device, both=False, learning_rate=recipe.learning_rate)
    batches = method.batches(build_samples(split.training, split.lge_labelled), recipe.batch_size)
    result = train(method, batches, recipe.schedule(), seed=recipe.seed, validate=lambda m: validation_score(m, split.validation),
                   log=lambda event: events.metrics("training", event["step"], event) if "validation" in event else None)
    rows = {name: {p: card.validation["dice_native_lge"][p][name] for p in map(str, card.validation["patients"])} for name in BUNDLE_OUTPUTS}
    rows["UNet-single"] = {str(p.patient): score_native(p, predict_patient(method, p)["UNet-single"])["volume"] for p in split.validation}
    meta = {"bundle": card.id, "device": describe_device(device), "filters": args.filters, "steps": recipe.steps,
            "batch_size": recipe.batch_size, "seconds": result.seconds, "best_step": result.best_step,
            "bundle_seconds": card.training.get("seconds"), "torch": torch.__version__,
            "validation_curve": {e["step"]: e["validation"] for e in result.history if "validation" in e}}
    args.out.mkdir(parents=True, exist_ok=True)
    events.result(write_outputs(args.out, "bundle_baseline", {"meta": meta, "dice_native_lge": rows}, markdown(rows, meta)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
