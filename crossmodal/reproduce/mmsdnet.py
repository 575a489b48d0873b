"""Reproduce Table 1 of the MMSDNet paper on MS-CMRSeg: every method x LGE-mask fraction, 3-fold CV.

    python -m crossmodal.reproduce.mmsdnet --data ../shared/data/mscmrseg --out results/mmsdnet-table1

Splits are by patient. Only the 10 fully labelled pairs can be scored, so they are dealt into 3 test
folds (each tested once); per fold two of the remaining labelled pairs validate (checkpoint choice)
and the rest train, together with every paired patient whose LGE has no mask (cine masks only).
The LGE-mask fraction (100/50/25/0 %) applies to the labelled training patients, nested (the 25 %
patients are among the 50 %, ...). Cine masks are always used.

Every finished (fold, method, fraction) run is saved at once under ``<out>/runs/``; running the
command again resumes where it stopped. The results go to ``table1.md`` and ``table1.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.stats import wilcoxon

from crossmodal.datasets import discover_mscmrseg
from crossmodal.devices import describe_device, pick_device
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.mmsdnet import MMSDNetConfig
from crossmodal.pairing import PairingConfig, write_back
from crossmodal.reproduce.cardiac_baselines import DualStreamMethod, UNetMethod
from crossmodal.reproduce.common import RunStore, add_schedule_arguments, chosen_schedule, write_outputs
from crossmodal.reproduce.registration_baselines import copy_masks, register_masks
from crossmodal.training.cardiac_data import (
    CardiacPatient,
    build_samples,
    load_patient,
)
from crossmodal.training.evaluation import (
    predict_patient,
    score_common_grid,
    score_labels,
    score_native,
)
from crossmodal.training.methods import Method, MMSDNetMethod
from crossmodal.training.trainer import Schedule, train

FRACTIONS = (100, 50, 25, 0)
COLUMNS = (*CARDIAC_MYO_LV.names, "mean")
"""Per fraction: Dice of each structure and their mean."""
LEARNED = ("UNet-single", "UNet-both", "DualStream", "MMSDNet")
ROWS = ("copy masks", "registration", "UNet-single", "UNet-both", "DualStream", "MMSDNet-single", "MMSDNet-multi")


@dataclass(frozen=True)
class ReproductionSchedule:
    """Everything that differs between the CPU and the GPU runs."""

    name: str
    size: int
    spacing_mm: float
    filters: int
    steps: int
    batch_size: int
    learning_rate: float
    validate_every: int


SCHEDULES = {
    # The paper's configuration (64 filters, Adam 1e-4) on the 144 px x 1.5 mm common grid.
    "full": ReproductionSchedule("full", 144, 1.5, 64, 20000, 8, 1e-4, 500),
    # What a 2-core CPU finishes in about an hour for all 57 trainings: narrower nets, a coarser
    # grid, and a 10x learning rate for a schedule ~100x shorter.
    "reduced": ReproductionSchedule("reduced", 96, 2.0, 16, 300, 8, 1e-3, 50),
}


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    labelled_train: tuple[int, ...]
    """Training patients that have an LGE mask, in the order fractions take them."""

    def lge_labelled(self, fraction: int) -> set[int]:
        count = 0 if fraction == 0 else max(1, round(fraction / 100 * len(self.labelled_train)))
        return set(self.labelled_train[:count])


def make_folds(labelled: list[int], unlabelled: list[int], folds: int = 3, validation: int = 2, seed: int = 0) -> list[Fold]:
    """Deal the labelled pairs into ``folds`` test groups; validation from the next group's leftovers."""
    if len(labelled) < folds + validation + 1:
        raise ValueError(f"{len(labelled)} fully labelled pairs are too few for {folds} folds with {validation} validation patients")
    order = [int(p) for p in np.random.default_rng(seed).permutation(sorted(labelled))]
    groups = [order[i::folds] for i in range(folds)]
    result = []
    for f in range(folds):
        rest = [p for g in groups[f + 1 :] + groups[:f] for p in g]
        val, train_labelled = rest[:validation], rest[validation:]
        result.append(Fold(f, tuple(sorted(train_labelled + unlabelled)), tuple(val), tuple(sorted(groups[f])), tuple(train_labelled)))
    return result


def build_method(name: str, schedule: ReproductionSchedule, device: torch.device) -> Method:
    lr, filters = schedule.learning_rate, schedule.filters
    if name == "MMSDNet":
        return MMSDNetMethod(MMSDNetConfig(filters=filters), device, learning_rate=lr)
    if name == "DualStream":
        return DualStreamMethod(3, filters, 4, device, learning_rate=lr)
    return UNetMethod(3, filters, 4, device, both=name == "UNet-both", learning_rate=lr)


def run_fold_method(fold: Fold, method_name: str, fraction: int, patients: dict[int, CardiacPatient],
                    schedule: ReproductionSchedule, device: torch.device, seed: int) -> dict:
    """Train one method on one fold at one LGE-mask fraction; score its outputs on the test patients."""
    samples = build_samples([patients[p] for p in fold.train], fold.lge_labelled(fraction))
    method = build_method(method_name, schedule, device)
    usable = method.usable(samples)
    if not usable.any():
        return {"trained": False, "reason": "no labelled LGE slices to learn from"}
    validation = [patients[p] for p in fold.validation]

    def validate(m: Method) -> float:
        return float(np.mean([score_common_grid(p, predict_patient(m, p)[m.outputs[-1]]) for p in validation]))

    batches = method.batches(samples, schedule.batch_size)
    result = train(method, batches, Schedule(schedule.steps, schedule.validate_every), seed=seed, validate=validate)
    scores = {name: {} for name in method.outputs}
    for p in fold.test:
        for name, probs in predict_patient(method, patients[p]).items():
            scores[name][str(p)] = score_native(patients[p], probs)
    return {"trained": True, "best_step": result.best_step, "validation": result.best_score, "seconds": result.seconds, "scores": scores}


def run_baselines(fold: Fold, patients: dict[int, CardiacPatient], spacing_mm: float) -> dict:
    scores: dict[str, dict] = {"copy masks": {}, "registration": {}}
    for p in fold.test:
        patient = patients[p]
        for name, labels in (("copy masks", copy_masks(patient)), ("registration", register_masks(patient, spacing_mm=spacing_mm))):
            scores[name][str(p)] = score_labels(patient, sitk.GetArrayFromImage(write_back(patient.stack, labels, "LGE")))
    return scores


def summarise(runs: list[dict]) -> dict:
    """Pool the test patients of all folds per (row, fraction): mean and std per structure."""
    table: dict[str, dict] = {}
    for row in ROWS:
        for fraction in FRACTIONS:
            per_patient = {}
            for run in runs:
                if row in run.get("scores", {}) and (run["fraction"] == fraction or run["method"] == "baselines"):
                    per_patient.update(run["scores"][row])
            if per_patient:
                table.setdefault(row, {})[str(fraction)] = _statistics(per_patient)
    return table


def _statistics(per_patient: dict[str, dict]) -> dict:
    out = {"patients": sorted(per_patient, key=int)}
    for level in ("volume", "slices"):
        for structure in COLUMNS:
            values = [s[level][structure] for s in per_patient.values()]
            out[f"{level}_{structure}"] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}
    return out


def significance(table: dict) -> dict:
    """Wilcoxon signed-rank test, per fraction, of MMSDNet-multi against the best other method (mean Dice per patient)."""
    tests = {}
    for fraction in map(str, FRACTIONS):
        if fraction not in table.get("MMSDNet-multi", {}):
            continue
        others = {r: t[fraction] for r, t in table.items() if r not in ("MMSDNet-multi", "MMSDNet-single") and fraction in t}
        if not others:
            continue
        best = max(others, key=lambda r: others[r]["volume_mean"]["mean"])
        ours = table["MMSDNet-multi"][fraction]
        a, b = np.array(ours["volume_mean"]["values"]), np.array(others[best]["volume_mean"]["values"])
        p = float(wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
        tests[fraction] = {"against": best, "difference": float(np.mean(a - b)), "p_value": p, "patients": len(a)}
    return tests


def markdown(table: dict, tests: dict, meta: dict) -> str:
    lines = [f"# MMSDNet Table 1 on MS-CMRSeg ({meta['schedule']['name']} schedule, {meta['device']})", ""]
    for level, title in (("volume", "Dice per volume"), ("slices", "Dice per slice")):
        lines += [f"## {title} (mean ± std over the test patients of all folds run: {meta['test_patients']})", ""]
        header = "| method | " + " | ".join(f"{f} % {s}" for f in FRACTIONS for s in COLUMNS) + " |"
        lines += [header, "|---" * (1 + 3 * len(FRACTIONS)) + "|"]
        for row in ROWS:
            cells = []
            for f in map(str, FRACTIONS):
                stats = table.get(row, {}).get(f)
                cells += ["n/a"] * 3 if stats is None else [f"{stats[f'{level}_{s}']['mean']:.2f} ± {stats[f'{level}_{s}']['std']:.2f}" for s in COLUMNS]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## MMSDNet-multi against the best other method (Wilcoxon signed-rank, per-patient mean Dice)", ""]
    lines += [f"- {f} %: vs {t['against']}: difference {t['difference']:+.3f}, p = {t['p_value']:.3g} (n = {t['patients']})" for f, t in tests.items()]
    lines += ["", "n/a: the method cannot train (no labelled LGE at 0 %).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="MS-CMRSeg folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumes a run already there)")
    add_schedule_arguments(parser, SCHEDULES)
    parser.add_argument("--methods", nargs="+", default=[*LEARNED, "baselines"], choices=[*LEARNED, "baselines"])
    parser.add_argument("--fractions", nargs="+", type=int, default=list(FRACTIONS), choices=FRACTIONS)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    schedule = chosen_schedule(args, SCHEDULES, device)
    cases = [c for c in discover_mscmrseg(args.data) if c.is_pair and c.has_mask("C0")]
    labelled = [c.patient for c in cases if c.has_mask("DE")]
    unlabelled = [c.patient for c in cases if not c.has_mask("DE")]
    folds = make_folds(labelled, unlabelled, seed=args.seed)
    pairing = PairingConfig(spacing_mm=schedule.spacing_mm, size=schedule.size)
    patients = {c.patient: load_patient(c, pairing) for c in cases}
    store = RunStore(args.out)

    jobs = [("baselines", 0)] if "baselines" in args.methods else []
    jobs += [(m, f) for m in args.methods if m != "baselines" for f in args.fractions]
    total, done = len(args.folds) * len(jobs), 0
    events.progress("runs", 0, total)
    for fold in (folds[i] for i in args.folds):
        for method_name, fraction in jobs:
            done += 1
            if store.done(fold.index, method_name, fraction):
                events.progress("runs", done, total)
                continue
            start = time.perf_counter()
            if method_name == "baselines":
                run = {"trained": False, "scores": run_baselines(fold, patients, schedule.spacing_mm)}
            else:
                run = run_fold_method(fold, method_name, fraction, patients, schedule, device, args.seed)
            run.update(fold=fold.index, method=method_name, fraction=fraction, wall_seconds=time.perf_counter() - start)
            store.save(run, fold.index, method_name, fraction)
            values = {"fold": fold.index, "fraction": fraction, "seconds": run["wall_seconds"]}
            if isinstance(run.get("validation"), (int, float)):
                values["validation"] = run["validation"]
            events.metrics("runs", done, values)
            events.progress("runs", done, total)

    table = summarise(store.all())
    tests = significance(table)
    meta = {
        "schedule": asdict(schedule), "device": describe_device(device), "folds": [asdict(f) for f in folds],
        "test_patients": len({p for row in table.values() for cell in row.values() for p in cell["patients"]}),
        "seed": args.seed, "torch": torch.__version__,
    }
    text = markdown(table, tests, meta)
    events.result(write_outputs(args.out, "table1", {"meta": meta, "table": table, "significance": tests}, text), runs=total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
