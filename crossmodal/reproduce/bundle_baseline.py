"""The question a user asks of the bundled MMSDNet: does it beat a plain U-Net on the LGE alone?

    python -m crossmodal.reproduce.bundle_baseline --bundle Resources/Models/mmsdnet-mscmrseg \\
        --data ../shared/data/mscmrseg --out results/bundle-baseline

Trains UNet-single with everything the bundle's own recipe fixes: the same patients (every LGE mask
the bundle trained with, pairs and LGE-only patients alike), the same common grid, steps, batch,
learning rate, warm-up and decay, augmentation, and checkpoint choice on the same validation
patients; then scores it on those patients' native LGE grid beside the bundle, and beside the two
averaged (the ``MMSDNet+UNet`` ensemble of Table 1 and its LGE-only control). A U-Net step costs a fraction
of an MMSDNet step, so the U-Net's CPU budget is at most the bundle's.

``--ensemble FOLDER --version V`` also writes that ensemble as a bundle (:mod:`crossmodal.nets.ensemble`):
the MMSDNet bundle's weights and recipe with this U-Net beside them, stored in float16 to stay under 30 MB; its
card's validation is the rows above scored again on those rounded weights.
Given an ensemble bundle, the comparison and the new ensemble take its MMSDNet (its U-Net is trained again).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from crossmodal.bundles import CARD, LGE_UNET, RECIPE, ModelCard, load_bundle, round_to_float16, save_bundle
from crossmodal.devices import DEVICES, describe_device, pick_device
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.ensemble import LGEEnsemble
from crossmodal.reproduce.cardiac_baselines import UNetMethod
from crossmodal.reproduce.common import write_outputs
from crossmodal.reproduce.mmsdnet import CONTROL, ENSEMBLE, ENSEMBLES
from crossmodal.training.cardiac_data import CardiacPatient, build_samples
from crossmodal.training.evaluation import predict_patient, score_native, validation_score
from crossmodal.training.methods import MMSDNetMethod
from crossmodal.training.recipes import MMSDNetRecipe, read_recipe
from crossmodal.training.trainer import train

STRUCTURES = (*CARDIAC_MYO_LV.names, "mean")
ROWS = {"MMSDNet-multi": "bundle, fused", "MMSDNet-single": "bundle, LGE only", "UNet-single": "UNet-single",
        ENSEMBLE: "bundle + UNet-single, fused", CONTROL: "bundle + UNet-single, LGE only"}
"""Result name -> how the table names it."""


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
        lines.append(f"| {ROWS[name]} | " + " | ".join(cells) + " |")
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
    parser.add_argument("--ensemble", type=Path, help="also write the bundle + U-Net ensemble as a bundle here")
    parser.add_argument("--version", help="the ensemble bundle's version (with --ensemble)")
    args = parser.parse_args(argv)
    if args.ensemble and not args.version:
        parser.error("--ensemble needs --version")
    if args.ensemble and (args.ensemble / CARD).exists():
        parser.error(f"--ensemble {args.ensemble} already holds a model bundle; give a new folder (nothing is overwritten)")

    recipe = read_recipe(args.bundle / RECIPE, data={"mscmrseg": str(args.data)}, steps=args.steps)
    if not isinstance(recipe, MMSDNetRecipe):
        raise SystemExit(f"{args.bundle}: not an MMSDNet bundle")
    device = pick_device(args.device)
    card, network = load_bundle(args.bundle, device)
    mmsdnet = network.mmsdnet if isinstance(network, LGEEnsemble) else network  # an ensemble bundle: its MMSDNet, a new U-Net
    split = recipe.split(lambda *_: None)
    torch.manual_seed(recipe.seed)
    method = UNetMethod(len(CARDIAC_MYO_LV.labels) + 1, args.filters, 4, device, both=False, learning_rate=recipe.learning_rate)
    batches = method.batches(build_samples(split.training, split.lge_labelled), recipe.batch_size)
    result = train(method, batches, recipe.schedule(), seed=recipe.seed, validate=lambda m: validation_score(m, split.validation),
                   log=lambda event: events.metrics("training", event["step"], event) if "validation" in event else None)
    bundled = MMSDNetMethod(mmsdnet.config, device)
    bundled.network.load_state_dict(mmsdnet.state_dict())
    scores = {str(p.patient): validation_scores(p, bundled, method) for p in split.validation}
    rows = {name: {p: per_row[name] for p, per_row in scores.items()} for name in ROWS}
    meta = {"bundle": card.id, "device": describe_device(device), "filters": args.filters, "steps": recipe.steps,
            "batch_size": recipe.batch_size, "seconds": result.seconds, "best_step": result.best_step,
            "bundle_seconds": card.training.get("seconds"), "torch": torch.__version__,
            "validation_curve": {e["step"]: e["validation"] for e in result.history if "validation" in e}}
    args.out.mkdir(parents=True, exist_ok=True)
    events.result(write_outputs(args.out, "bundle_baseline", {"meta": meta, "dice_native_lge": rows}, markdown(rows, meta)))
    if args.ensemble:
        record = {k: meta[k] for k in ("filters", "steps", "batch_size", "seconds", "best_step")}
        events.result(write_ensemble(args.ensemble, args.bundle, card, bundled, method, split.validation, args.version, record))
    return 0


def write_ensemble(folder: Path, bundle: Path, card: ModelCard, bundled: MMSDNetMethod, unet: UNetMethod, validation: list[CardiacPatient],
                   version: str, unet_record: dict) -> Path:
    """Write the two methods' networks as one float16 bundle (under 30 MB) beside the MMSDNet ``bundle``'s recipe.
    The networks are rounded in place first, so its card's validation is scored on the weights it stores."""
    ensemble = round_to_float16(LGEEnsemble(bundled.network, unet.network))
    scores = {str(p.patient): validation_scores(p, bundled, unet) for p in validation}
    shape = {"filters": unet.network.encoder.widths[0], "depth": unet.network.depth}
    written = ModelCard(**{**asdict(card), "version": version, "training": {**card.training, LGE_UNET: unet_record},
                           "hyperparameters": {**card.hyperparameters, LGE_UNET: shape},
                           "validation": {"patients": card.validation["patients"], "dice_native_lge": scores}})
    save_bundle(folder, ensemble.cpu(), written, float16=True)
    shutil.copyfile(bundle / RECIPE, folder / RECIPE)
    return folder


def validation_scores(patient: CardiacPatient, bundled: MMSDNetMethod, unet: UNetMethod) -> dict[str, dict[str, float]]:
    """Dice per volume of every row of :data:`ROWS` for one patient (the ensembles average probabilities as Table 1 does)."""
    outputs = {**predict_patient(bundled, patient), **predict_patient(unet, patient)}
    outputs.update({row: np.mean([outputs[name] for name in averaged], axis=0) for row, averaged in ENSEMBLES.items()})
    return {name: score_native(patient, outputs[name])["volume"] for name in ROWS}


if __name__ == "__main__":
    sys.exit(main())
