"""Reproduce Table 1 of the MMSDNet paper on MS-CMRSeg: every method x LGE-mask fraction, 3-fold CV.

    python -m crossmodal.reproduce.mmsdnet --data ../shared/data/mscmrseg --out results/mmsdnet-table1

Splits are by patient. Only the 10 fully labelled pairs can be scored, so they are dealt into 3 test
folds (each tested once); per fold two of the remaining labelled pairs validate (checkpoint choice)
and the rest train, together with every paired patient whose LGE has no mask (cine masks only) and
every LGE-only patient with an LGE mask (MS-CMRSeg 36-45: LGE slices without a cine). The LGE-mask
fraction (100/50/25/0 %) applies to the LGE-labelled training patients, nested (the 25 % patients are
among the 50 %, ...). Cine masks are always used.

What runs is the schedule's protocol: on a GPU (``full``) every method, fraction and fold with two
seeds each; on a CPU (``reduced``: about 2 h 15 min on 2 cores with native bfloat16, 4 h without) the
100 % and 0 % columns of UNet-single, UNet-both, UNet-paired and MMSDNet (two seeds of MMSDNet) and the
registration baselines.
A method trained with several seeds counts each test patient once, at its mean over the seeds.
UNet-paired is not in the paper: a U-Net on the LGE beside its paired cine, the plainest fusion there is.
Nor is ``--methods MMSDNet+UNet`` (never in a protocol by default): MMSDNet-multi averaged with UNet-single.

Every finished (seed, fold, method, fraction) run is saved at once under ``<out>/runs/``; running the
command again resumes where it stopped. The results go to ``table1.md`` and ``table1.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.stats import wilcoxon

from crossmodal.datasets import discover_mscmrseg
from crossmodal.devices import describe_device, fast_bfloat16, pick_device
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.mmsdnet import PAPER_SEGMENTOR, SEGMENTORS, MMSDNetConfig
from crossmodal.pairing import PairingConfig, write_back
from crossmodal.reproduce.cardiac_baselines import DualStreamMethod, PairedUNetMethod, UNetMethod
from crossmodal.reproduce.common import RunStore, add_schedule_arguments, chosen_schedule, write_outputs
from crossmodal.reproduce.registration_baselines import copy_masks, register_masks
from crossmodal.training.cardiac_data import (
    CardiacPatient,
    build_samples,
    load_patient,
)
from crossmodal.training.evaluation import (
    predict_patient,
    score_labels,
    score_native,
    validation_score,
)
from crossmodal.training.methods import Method, MMSDNetMethod
from crossmodal.training.trainer import Schedule, TrainingResult, train

FRACTIONS = (100, 50, 25, 0)
COLUMNS = (*CARDIAC_MYO_LV.names, "mean")
"""Per fraction: Dice of each structure and their mean."""
LEARNED = ("UNet-single", "UNet-both", "UNet-paired", "DualStream", "MMSDNet")
ENSEMBLE = "MMSDNet+UNet"
"""Not in the paper, asked for by name (``--methods``): MMSDNet and UNet-single trained on the fold exactly as
their own rows are (same seed, each choosing its own checkpoint), their probabilities averaged. It asks
whether the aligned cine adds to a strong LGE segmentor, rather than replacing it."""
CONTROL = "MMSDNet-single+UNet"
"""The ensemble's control: the same two networks without the cine, so that what averaging two different
networks gains is not credited to the cine."""
ENSEMBLES = {ENSEMBLE: ("MMSDNet-multi", "UNet-single"), CONTROL: ("MMSDNet-single", "UNet-single")}
"""The rows an ensemble run fills and the member outputs each averages."""
ENSEMBLE_MEMBERS = ("MMSDNet", "UNet-single")
TRAINS_MMSDNET = ("MMSDNet", ENSEMBLE)
"""Methods that train an MMSDNet: its seeds and its segmentor apply to them."""
ROWS = ("copy masks", "registration", "UNet-single", "UNet-both", "UNet-paired", "DualStream", "MMSDNet-single", "MMSDNet-multi", *ENSEMBLES)
MMSDNET_ROWS = ("MMSDNet-single", "MMSDNet-multi", *ENSEMBLES)
"""Rows with an MMSDNet output in them: never the comparison a tested row is held against."""
TESTED = ("MMSDNet-multi", ENSEMBLE)
"""Rows tested against the best row outside :data:`MMSDNET_ROWS`; the ensemble also against its control."""


@dataclass(frozen=True)
class ReproductionSchedule:
    """Everything that differs between the CPU and the GPU runs: the training and what is run."""

    name: str
    size: int
    spacing_mm: float
    filters: int
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    final_learning_rate: float
    validate_every: int
    bfloat16: bool
    """MMSDNet's forward pass in bfloat16 autocast, where the device runs it natively."""
    methods: tuple[str, ...]
    fractions: tuple[int, ...]
    seeds: int
    """Seeds of every learned baseline."""
    mmsdnet_seeds: int
    segmentor: str = PAPER_SEGMENTOR
    """MMSDNet's segmentor (see :attr:`MMSDNetConfig.segmentor`): the paper's, or an ablation's (``--segmentor``)."""

    def seeds_of(self, method: str) -> int:
        return self.mmsdnet_seeds if method in TRAINS_MMSDNET else self.seeds


SCHEDULES = {
    # The paper's configuration (64 filters, Adam 1e-4) on the 144 px x 1.5 mm common grid, every
    # method, fraction and fold, two seeds each.
    "full": ReproductionSchedule("full", 144, 1.5, 64, 20000, 8, 1e-4, 500, 0.05, 500, True,
                                 (*LEARNED, "baselines"), FRACTIONS, 2, 2),
    # What a 2-core CPU finishes in about 2 h 15 min: the bundle's recipe (warm-up, cosine decay,
    # bfloat16) at the ablation's grid and a fifth of its steps, for the 100 % and 0 % columns of
    # the U-Nets and MMSDNet (two seeds). Measured there: an MMSDNet run ~10 min with native bfloat16
    # (~19 min in float32 on a CPU without it: 4 h in all), a U-Net run 1-1.5 min.
    "reduced": ReproductionSchedule("reduced", 96, 2.0, 16, 400, 8, 1e-3, 40, 0.05, 50, True,
                                    ("UNet-single", "UNet-both", "UNet-paired", "MMSDNet", "baselines"), (100, 0), 1, 2),
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


def make_folds(labelled: list[int], unlabelled: list[int], lge_only: list[int] = (), folds: int = 3, validation: int = 2,
               seed: int = 0) -> list[Fold]:
    """Deal the labelled pairs into ``folds`` test groups; validation from the next group's leftovers.

    ``unlabelled`` pairs (cine masks only) and ``lge_only`` LGE-labelled patients without a cine train
    in every fold; the fractions take the LGE-labelled training patients, pairs and LGE-only alike, in
    a shuffled order.
    """
    if len(labelled) < folds + validation + 1:
        raise ValueError(f"{len(labelled)} fully labelled pairs are too few for {folds} folds with {validation} validation patients")
    rng = np.random.default_rng(seed)
    order = [int(p) for p in rng.permutation(sorted(labelled))]
    groups = [order[i::folds] for i in range(folds)]
    result = []
    for f in range(folds):
        rest = [p for g in groups[f + 1 :] + groups[:f] for p in g]
        val, train_labelled = rest[:validation], [int(p) for p in rng.permutation(rest[validation:] + sorted(lge_only))]
        result.append(Fold(f, tuple(sorted(train_labelled + list(unlabelled))), tuple(val), tuple(sorted(groups[f])), tuple(train_labelled)))
    return result


def build_method(name: str, schedule: ReproductionSchedule, device: torch.device) -> Method:
    lr, filters = schedule.learning_rate, schedule.filters
    if name == "MMSDNet":
        return MMSDNetMethod(MMSDNetConfig(filters=filters, segmentor=schedule.segmentor), device, learning_rate=lr,
                             bfloat16=schedule.bfloat16 and fast_bfloat16(device))
    if name == "DualStream":
        return DualStreamMethod(3, filters, 4, device, learning_rate=lr)
    if name == "UNet-paired":
        return PairedUNetMethod(3, filters, 4, device, learning_rate=lr)
    return UNetMethod(3, filters, 4, device, both=name == "UNet-both", learning_rate=lr)


def train_fold_method(fold: Fold, method_name: str, fraction: int, patients: dict[int, CardiacPatient],
                      schedule: ReproductionSchedule, device: torch.device, seed: int) -> tuple[Method, TrainingResult] | None:
    """Train one method on one fold at one LGE-mask fraction, checkpoint chosen on the fold's validation
    patients; None when the method has nothing to learn from at this fraction."""
    samples = build_samples([patients[p] for p in fold.train], fold.lge_labelled(fraction))
    torch.manual_seed(seed)  # the initial weights belong to the seed too
    method = build_method(method_name, schedule, device)
    if not method.usable(samples).any():
        return None
    validation = [patients[p] for p in fold.validation]
    plan = Schedule(schedule.steps, schedule.validate_every, schedule.warmup_steps, schedule.final_learning_rate)
    return method, train(method, method.batches(samples, schedule.batch_size), plan, seed=seed, validate=lambda m: validation_score(m, validation))


def run_fold_method(fold: Fold, method_name: str, fraction: int, patients: dict[int, CardiacPatient],
                    schedule: ReproductionSchedule, device: torch.device, seed: int) -> dict:
    """Train one method (the ensemble: each of its members) on one fold at one LGE-mask fraction; score its
    outputs on the test patients (the ensemble's members under ``member_scores``, so that their own rows stay theirs)."""
    members = ENSEMBLE_MEMBERS if method_name == ENSEMBLE else (method_name,)
    trained = {name: train_fold_method(fold, name, fraction, patients, schedule, device, seed) for name in members}
    if any(t is None for t in trained.values()):
        return {"trained": False, "reason": "no labelled LGE slices to learn from"}
    scores: dict[str, dict] = {}
    for p in fold.test:
        outputs = {name: probs for method, _ in trained.values() for name, probs in predict_patient(method, patients[p]).items()}
        if method_name == ENSEMBLE:
            outputs.update({row: np.mean([outputs[name] for name in averaged], axis=0) for row, averaged in ENSEMBLES.items()})
        for name, probs in outputs.items():
            scores.setdefault(name, {})[str(p)] = score_native(patients[p], probs)
    results = {name: result for name, (_, result) in trained.items()}
    if method_name != ENSEMBLE:
        result = results[method_name]
        return {"trained": True, "best_step": result.best_step, "validation": result.best_score, "seconds": result.seconds, "scores": scores}
    return {"trained": True, "best_step": {n: r.best_step for n, r in results.items()}, "validation": {n: r.best_score for n, r in results.items()},
            "seconds": sum(r.seconds for r in results.values()), "scores": {row: scores.pop(row) for row in ENSEMBLES}, "member_scores": scores}


def run_baselines(fold: Fold, patients: dict[int, CardiacPatient], spacing_mm: float) -> dict:
    scores: dict[str, dict] = {"copy masks": {}, "registration": {}}
    for p in fold.test:
        patient = patients[p]
        for name, labels in (("copy masks", copy_masks(patient)), ("registration", register_masks(patient, spacing_mm=spacing_mm))):
            scores[name][str(p)] = score_labels(patient, sitk.GetArrayFromImage(write_back(patient.stack, labels, "LGE")))
    return scores


def summarise(runs: list[dict]) -> dict:
    """Pool the test patients of all folds per (row, fraction): mean and std per structure, each patient
    at its mean over the seeds run; ``seed_means``: the pooled mean Dice of each seed on its own."""
    table: dict[str, dict] = {}
    for row in ROWS:
        for fraction in FRACTIONS:
            per_seed: dict[int, dict[str, dict]] = {}
            for run in runs:
                if row in run.get("scores", {}) and (run["fraction"] == fraction or run["method"] == "baselines"):
                    per_seed.setdefault(run.get("seed", 0), {}).update(run["scores"][row])
            if per_seed:
                table.setdefault(row, {})[str(fraction)] = _statistics(per_seed)
    return table


def _statistics(per_seed: dict[int, dict[str, dict]]) -> dict:
    patients = sorted({p for scores in per_seed.values() for p in scores}, key=int)
    out: dict = {"patients": patients, "seed_means": {
        str(seed): float(np.mean([s["volume"]["mean"] for s in scores.values()])) for seed, scores in sorted(per_seed.items())}}
    for level in ("volume", "slices"):
        for structure in COLUMNS:
            values = [np.mean([scores[p][level][structure] for scores in per_seed.values() if p in scores]) for p in patients]
            out[f"{level}_{structure}"] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}
    return out


def significance(table: dict) -> dict:
    """Wilcoxon signed-rank test, per fraction, of each :data:`TESTED` row against the best row without
    MMSDNet, and of the ensemble against its control (mean Dice per patient): ``{row: {fraction: test}}``,
    the control's under ``"<ensemble> vs control"``."""
    tests: dict[str, dict] = {}
    for fraction in map(str, FRACTIONS):
        others = {r: t[fraction] for r, t in table.items() if r not in MMSDNET_ROWS and fraction in t}
        best = max(others, key=lambda r: others[r]["volume_mean"]["mean"]) if others else None
        pairs = [(ours, ours, best) for ours in TESTED] + [(f"{ENSEMBLE} vs control", ENSEMBLE, CONTROL)]
        for name, ours, against in pairs:
            if against is None or fraction not in table.get(ours, {}) or fraction not in table.get(against, {}):
                continue
            a, b = (np.array(table[row][fraction]["volume_mean"]["values"]) for row in (ours, against))
            p = float(wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
            tests.setdefault(name, {})[fraction] = {"against": against, "difference": float(np.mean(a - b)), "p_value": p, "patients": len(a)}
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
    lines += ["## Against the best method without MMSDNet (Wilcoxon signed-rank, per-patient mean Dice)", ""]
    lines += [f"- {row}, {f} %: vs {t['against']}: difference {t['difference']:+.3f}, p = {t['p_value']:.3g} (n = {t['patients']})"
              for row, per_fraction in tests.items() for f, t in per_fraction.items()]
    spread = [f"- {row}, {f} %: " + ", ".join(f"seed {s}: {m:.3f}" for s, m in cell["seed_means"].items())
              for row, cells in table.items() for f, cell in cells.items() if len(cell["seed_means"]) > 1]
    if spread:
        lines += ["", "## Mean Dice per volume of each seed on its own", "", *spread]
    lines += ["", "n/a: not run (see the schedule's protocol), or the method cannot train (no labelled LGE at 0 %).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="MS-CMRSeg folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumes a run already there)")
    add_schedule_arguments(parser, SCHEDULES)
    parser.add_argument("--methods", nargs="+", choices=[*LEARNED, ENSEMBLE, "baselines"],
                        help="default: the schedule's protocol")
    parser.add_argument("--fractions", nargs="+", type=int, choices=FRACTIONS, help="default: the schedule's protocol")
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--seeds", type=int, help="seeds of every learned method (default: the schedule's protocol)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the patient folds")
    parser.add_argument("--segmentor", choices=SEGMENTORS, default=PAPER_SEGMENTOR,
                        help="what MMSDNet's segmentor sees: the paper's one-hot anatomy, or an ablation (use its own --out)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    schedule = chosen_schedule(args, SCHEDULES, device)
    if args.seeds:
        schedule = replace(schedule, seeds=args.seeds, mmsdnet_seeds=args.seeds)
    schedule = replace(schedule, segmentor=args.segmentor)
    found = discover_mscmrseg(args.data)
    cases = [c for c in found if c.is_pair and c.has_mask("C0")]
    lge_only = [c for c in found if not c.is_pair and c.has_mask("DE")]
    labelled = [c.patient for c in cases if c.has_mask("DE")]
    unlabelled = [c.patient for c in cases if not c.has_mask("DE")]
    folds = make_folds(labelled, unlabelled, [c.patient for c in lge_only], seed=args.split_seed)
    pairing = PairingConfig(spacing_mm=schedule.spacing_mm, size=schedule.size)
    patients = {c.patient: load_patient(c, pairing) for c in cases + lge_only}
    store = RunStore(args.out)
    other = {run.get("segmentor", PAPER_SEGMENTOR) for run in store.all() if run["method"] in TRAINS_MMSDNET} - {schedule.segmentor}
    if other:
        raise SystemExit(f"{args.out} holds MMSDNet runs with the {', '.join(sorted(other))} segmentor, not {schedule.segmentor}: give this run its own --out")

    methods, fractions = args.methods or schedule.methods, args.fractions or schedule.fractions
    per_fold = [("baselines", 0)] if "baselines" in methods else []
    per_fold += [(m, f) for m in methods if m != "baselines" for f in fractions]
    # Seed by seed, so that an interrupted CPU run has whole tables of its first seeds.
    jobs = [(seed, fold, m, f) for seed in range(max(map(schedule.seeds_of, methods)))
            for fold in (folds[i] for i in args.folds) for m, f in per_fold if seed < (1 if m == "baselines" else schedule.seeds_of(m))]
    events.progress("runs", 0, len(jobs))
    for done, (seed, fold, method_name, fraction) in enumerate(jobs, 1):
        key = (fold.index, method_name, fraction, seed)
        if not store.done(*key):
            start = time.perf_counter()
            if method_name == "baselines":
                run = {"trained": False, "scores": run_baselines(fold, patients, schedule.spacing_mm)}
            else:
                run = run_fold_method(fold, method_name, fraction, patients, schedule, device, seed)
            run.update(fold=fold.index, method=method_name, fraction=fraction, seed=seed, wall_seconds=time.perf_counter() - start)
            if method_name in TRAINS_MMSDNET:
                run["segmentor"] = schedule.segmentor
            store.save(run, *key)
            values = {"fold": fold.index, "fraction": fraction, "seed": seed, "seconds": run["wall_seconds"]}
            if isinstance(run.get("validation"), (int, float)):
                values["validation"] = run["validation"]
            events.metrics("runs", done, values)
        events.progress("runs", done, len(jobs))

    table = summarise(store.all())
    tests = significance(table)
    meta = {
        "schedule": asdict(schedule), "device": describe_device(device), "folds": [asdict(f) for f in folds],
        "test_patients": len({p for row in table.values() for cell in row.values() for p in cell["patients"]}),
        "split_seed": args.split_seed, "torch": torch.__version__,
    }
    text = markdown(table, tests, meta)
    events.result(write_outputs(args.out, "table1", {"meta": meta, "table": table, "significance": tests}, text), runs=len(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
