"""Train the bundled MMSDNet on every paired MS-CMRSeg patient and write it as a model bundle.

    python -m crossmodal.train_mmsdnet --data ../shared/data/mscmrseg --out Resources/Models/mmsdnet-mscmrseg

All paired patients train (cine masks always; LGE masks where they exist) except ``--validation``
fully labelled patients, held out to choose the checkpoint and to report the card's validation
Dice (on their native LGE grids).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from crossmodal.bundles import ModelCard, save_bundle
from crossmodal.datasets import discover_mscmrseg
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.pairing import PairingConfig
from crossmodal.reproduce.mmsdnet import SCHEDULES, build_method
from crossmodal.training.cardiac_data import (
    balanced_batches,
    build_samples,
    load_patient,
)
from crossmodal.training.evaluation import (
    predict_patient,
    score_common_grid,
    score_native,
)
from crossmodal.training.trainer import Schedule, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="reduced")
    parser.add_argument("--steps", type=int, help="override the schedule's steps")
    parser.add_argument("--validation", nargs="+", type=int, default=[8, 33], help="held-out labelled patients")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    schedule = SCHEDULES[args.schedule] if args.steps is None else replace(SCHEDULES[args.schedule], steps=args.steps)
    pairing = PairingConfig(spacing_mm=schedule.spacing_mm, size=schedule.size)
    cases = [c for c in discover_mscmrseg(args.data) if c.is_pair and c.has_mask("C0")]
    patients = {c.patient: load_patient(c, pairing) for c in cases}
    missing = [p for p in args.validation if p not in patients or patients[p].lge_mask is None]
    if missing:
        raise SystemExit(f"--validation: patient(s) {missing} are not fully labelled pairs in {args.data}")
    training_patients = [p for p in patients if p not in args.validation]
    labelled = {p for p in training_patients if patients[p].lge_mask is not None}
    samples = build_samples([patients[p] for p in training_patients], labelled)
    method = build_method("MMSDNet", schedule, torch.device(args.device))
    validation = [patients[p] for p in args.validation]

    def validate(m) -> float:
        return float(np.mean([score_common_grid(p, predict_patient(m, p)["MMSDNet-multi"]) for p in validation]))

    def log(event: dict) -> None:
        if "validation" in event:
            print(json.dumps({k: round(v, 4) for k, v in event.items()}), flush=True)

    start = time.perf_counter()
    batches = balanced_batches(samples, method.usable(samples), schedule.batch_size, method.name)
    result = train(method, batches, Schedule(schedule.steps, schedule.validate_every), seed=args.seed, validate=validate, log=log)
    native = {str(p.patient): {name: score_native(p, probs)["volume"] for name, probs in predict_patient(method, p).items()} for p in validation}
    card = ModelCard(
        id="mmsdnet-mscmrseg",
        version="1.0.0",
        architecture="MMSDNet",
        hyperparameters=method.config.as_dict(),
        modalities=["cine", "LGE"],
        preprocessing={"size": schedule.size, "spacing_mm": schedule.spacing_mm,
                       "normalisation": "percentile 0.5-99.5 to 0..1, per slice", "pairing": "nearest cine slice per LGE slice"},
        labels=ModelCard.label_entries(CARDIAC_MYO_LV),
        training={
            "data": "MS-CMRSeg 2019 (paired cine + LGE)", "patients": sorted(training_patients), "lge_labelled": sorted(labelled),
            "schedule": schedule.name, "steps": schedule.steps, "batch_size": schedule.batch_size, "learning_rate": schedule.learning_rate,
            "best_step": result.best_step, "seconds": round(time.perf_counter() - start), "device": args.device, "torch": torch.__version__,
        },
        validation={"patients": args.validation, "dice_native_lge": native},
    )
    save_bundle(args.out, method.network, card)
    print(json.dumps({"bundle": str(args.out), "validation": native}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
