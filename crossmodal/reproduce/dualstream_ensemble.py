"""Average dual-stream bundles of one recipe, trained from different seeds, into one ensemble bundle.

    python -m crossmodal.reproduce.dualstream_ensemble --members RUN_SEED0 RUN_SEED1 \\
        --out results/dualstream-ensemble [--bundle FOLDER --version V]

Each member is a ``crossmodal train`` output of the same recipe but its ``seed`` (with ``validation_seed`` fixed,
so that every member holds out the same volumes). Scores every member and their average on those validation
volumes as ``segment`` delivers them, and writes the table; ``--bundle`` also writes the ensemble as a float16
bundle (two members of the bundled width stay under 30 MB), its card's validation scored on the weights it stores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from crossmodal.abdominal import Preparation
from crossmodal.bundles import CARD, MEMBERS, MIRRORED_PATCHES, RECIPE, ModelCard, load_bundle, round_to_float16, save_bundle
from crossmodal.devices import DEVICES, describe_device, pick_device
from crossmodal.errors import InputError
from crossmodal.events import Events, make_events
from crossmodal.nets.ensemble import DualStreamEnsemble
from crossmodal.nets.residual_fcn import DualStreamFCN
from crossmodal.reproduce.common import write_outputs
from crossmodal.training.recipes import DualStreamRecipe, Subject, load_subjects, modality_means, read_recipe, subject_dice

SHARED = ("architecture", "hyperparameters", "modalities", "labels")
"""Card entries every member must have alike, besides how volumes are prepared: one configuration fed alike, so
that averaging is meaningful."""


def read_members(folders: list[Path], device: torch.device) -> tuple[list[ModelCard], list[DualStreamFCN]]:
    """The members' cards and networks, refused unless they are single dual-stream networks of one configuration,
    preprocessing and validation split, trained apart (different weights)."""
    if len(folders) < 2:
        raise InputError("--members", f"an ensemble needs two bundles or more, not {len(folders)}")
    loaded = [load_bundle(folder, device) for folder in folders]
    cards = [card for card, _ in loaded]
    for folder, card in zip(folders, cards):
        if card.architecture != "DualStreamFCN" or MEMBERS in card.hyperparameters:
            raise InputError(folder, f"is a {card.network_name} bundle; members must be single dual-stream networks")
        differing = [key for key in SHARED if getattr(card, key) != getattr(cards[0], key)]
        if preparation(card) != preparation(cards[0]):
            differing.append("preprocessing")
        if card.validation.get("subjects") != cards[0].validation.get("subjects"):
            differing.append("validation subjects (train the members with one validation_seed)")
        if differing:
            raise InputError(folder, f"differs from {folders[0]} in {', '.join(differing)}; members must share them")
    if len({card.sha256 for card in cards}) < len(cards):
        raise InputError("--members", "names the same weights twice; members must be trained from different seeds")
    return cards, [network for _, network in loaded]


def preparation(card: ModelCard) -> tuple[Preparation, dict]:
    """How a member's volumes are prepared, as inference reads its card (a key newer cards record, older ones imply)."""
    return Preparation.of_card(card.preprocessing, f"model {card.id!r} (its card)"), card.preprocessing["stream_of_modality"]


def validation_subjects(folder: Path, card: ModelCard, data: dict[str, str]) -> list[Subject]:
    """The volumes the members held out, prepared by the first member's recipe (``data`` overrides its folders)."""
    recipe = read_recipe(folder / RECIPE, data)
    if not isinstance(recipe, DualStreamRecipe):
        raise InputError(folder / RECIPE, "is not a dual-stream recipe")
    subjects = {m: load_subjects(recipe.data_folder(m), m, recipe.preparation) for m in card.validation["subjects"].values()}
    held, _ = recipe.validation_split(subjects)
    if {s.case_id: s.modality for s in held} != card.validation["subjects"]:
        raise InputError(folder / RECIPE, "splits its data otherwise than its card records; were the data folders changed?")
    return held


def scores_of(network: torch.nn.Module, held: list[Subject], device: torch.device) -> dict:
    scores = {s.case_id: subject_dice(network, s, device) for s in held}
    return {"dice_native": scores, "average": modality_means(scores, held)}


def markdown(rows: dict[str, dict], held: list[Subject], meta: dict) -> str:
    first = next(iter(rows.values()))
    organs, modalities = list(first["dice_native"][held[0].case_id]), sorted(first["average"])
    lines = [f"# Dual-stream seed ensemble on its members' validation volumes ({meta['device']})", "",
             "Dice per organ as `segment` delivers it (" + " / ".join(organs) + " = mean).", "",
             "| network | " + " | ".join(f"{s.case_id} ({s.modality})" for s in held) + " | " + " | ".join(f"{m} mean" for m in modalities) + " |",
             "|---" * (1 + len(held) + len(modalities)) + "|"]
    for name, row in rows.items():
        cells = [" / ".join(f"{row['dice_native'][s.case_id][o]:.3f}" for o in organs) +
                 f" = **{np.mean(list(row['dice_native'][s.case_id].values())):.3f}**" for s in held]
        cells += [f"{row['average'][m]:.3f}" for m in modalities]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", f"Float16 weights for the ensemble row: {meta['float16']}.", ""])


def ensemble_card(cards: list[ModelCard], id: str, version: str, validation: dict) -> ModelCard:
    """The first member's card with every member's training record and the ensemble's own id and validation."""
    first = cards[0]
    members = [{k: v for k, v in card.training.items() if k not in ("data", "subjects")} for card in cards]
    training = {"data": first.training["data"], "subjects": first.training["subjects"], "members": members,
                **({MIRRORED_PATCHES: True} if all(c.trained_mirrored for c in cards) else {})}
    return ModelCard(**{**asdict(first), "id": id, "version": version, "hyperparameters": {**first.hyperparameters, MEMBERS: len(cards)},
                        "training": training, "validation": {"subjects": first.validation["subjects"], **validation}})


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", required=True, nargs="+", type=Path, help="bundles of one recipe, trained from different seeds")
    parser.add_argument("--out", required=True, type=Path, help="folder of the table (dualstream_ensemble.md and .json)")
    parser.add_argument("--ct", help="nnU-Net-layout CT dataset; overrides the recipe's data.CT")
    parser.add_argument("--mr", help="nnU-Net-layout MR dataset; overrides the recipe's data.MR")
    parser.add_argument("--bundle", type=Path, help="also write the ensemble as a bundle here")
    parser.add_argument("--id", help="the ensemble bundle's model id (default: the first member's)")
    parser.add_argument("--version", help="the ensemble bundle's version (with --bundle)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    args = parser.parse_args(argv)
    if args.bundle and not args.version:
        parser.error("--bundle needs --version")
    if args.bundle and (args.bundle / CARD).exists():
        parser.error(f"--bundle {args.bundle} already holds a model bundle; give a new folder (nothing is overwritten)")

    device = pick_device(args.device)
    cards, networks = read_members(args.members, device)
    held = validation_subjects(args.members[0], cards[0], {k: v for k, v in (("CT", args.ct), ("MR", args.mr)) if v})
    rows = {f"{card.id} {card.version} (seed {card.training['recipe']['seed']})": scores_of(network, held, device)
            for card, network in zip(cards, networks)}
    ensemble = round_to_float16(DualStreamEnsemble(networks))
    rows[f"ensemble of {len(cards)}"] = validation = scores_of(ensemble, held, device)
    meta = {"device": describe_device(device), "members": [str(folder) for folder in args.members], "float16": True, "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    events.result(write_outputs(args.out, "dualstream_ensemble", {"meta": meta, "rows": rows}, markdown(rows, held, meta)))
    if args.bundle:
        save_bundle(args.bundle, ensemble.cpu(), ensemble_card(cards, args.id or cards[0].id, args.version, validation), float16=True)
        shutil.copyfile(args.members[0] / RECIPE, args.bundle / RECIPE)
        events.result({"bundle": str(args.bundle)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
