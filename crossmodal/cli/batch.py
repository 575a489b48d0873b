"""``segment --batch FOLDER``: every case of a folder, one output folder per case and one summary table.

Layouts, told apart by what the folder holds:

* MS-CMRSeg (``patient{N}_DE/C0[_manual].nii.gz``): cardiac, the LGE and cine of each patient (either
  alone where the other is missing), the LGE's manual mask as reference where there is one;
* nnU-Net raw (``dataset.json``): abdominal, ``imagesTs/`` (else ``imagesTr/``) ``CASE_0000``, the
  ``labelsTr/`` label as reference where there is one;
* a plain folder: abdominal, every image file and every DICOM series sub-folder.

A case that fails (bad input) is reported and skipped, the others go on; the exit code says whether any
failed (:data:`EXIT_SOME_FAILED`). The summary (``summary.csv`` and ``summary.json`` in ``--out``) has
per case its status, organ volumes, QA flags (warnings, flagged slices) and Dice against a reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from crossmodal.cli import EXIT_SOME_FAILED
from crossmodal.datasets import discover_mscmrseg
from crossmodal.errors import InputError
from crossmodal.events import Events
from crossmodal.image_io import atomic_output, image_suffix, read_image, writable_folder
from crossmodal.labels import ABDOMEN
from crossmodal.scoring import score_images
from crossmodal.segment_outputs import ORGANS_FILE, SegmentOutput, main_mask

SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"
ROLES = ("lge", "cine", "image")


@dataclass(frozen=True)
class BatchCase:
    name: str
    inputs: dict[str, Path]
    """Role ("lge", "cine" or "image") -> file or DICOM folder."""
    reference: Path | None = None


def discover_cases(folder: Path, out: Path | None = None) -> list[BatchCase]:
    """The cases of ``folder`` in its layout (see the module docstring); ``out``, the batch's own output folder, is
    never a case even when it lies inside ``folder``."""
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    if (folder / "dataset.json").is_file():
        return _nnunet_cases(folder)
    if any(re.match(r"patient\d+_(C0|DE)", p.name) for p in folder.iterdir()):
        cases = [c for c in discover_mscmrseg(folder) if {"DE", "C0"} & c.images.keys()]
        return [BatchCase(f"patient{c.patient}", {role: c.images[m] for role, m in (("lge", "DE"), ("cine", "C0")) if m in c.images},
                          c.masks.get("DE")) for c in cases]
    skip = out.resolve() if out is not None else None
    cases = [BatchCase(_stem(p), {"image": p}) for p in sorted(folder.iterdir())
             if p.resolve() != skip and ((p.is_file() and image_suffix(p)) or (p.is_dir() and sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))))]
    if not cases:
        raise InputError(folder, "holds no cases: an MS-CMRSeg folder, an nnU-Net raw dataset or images (NIfTI, NRRD, MHA, DICOM folders)")
    return cases


def _stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _nnunet_cases(folder: Path) -> list[BatchCase]:
    ending = json.loads((folder / "dataset.json").read_text()).get("file_ending", ".nii.gz")
    images = folder / "imagesTs" if (folder / "imagesTs").is_dir() else folder / "imagesTr"
    cases = []
    for path in sorted(images.glob(f"*_0000{ending}")):
        name = path.name[: -len(f"_0000{ending}")]
        label = folder / "labelsTr" / f"{name}{ending}"
        cases.append(BatchCase(name, {"image": path}, label if label.is_file() else None))
    if not cases:
        raise InputError(images, f"holds no images named CASE_0000{ending}")
    return cases


class CaseEvents(Events):
    """A case's events within a batch: its warnings go to the batch's stream named by the case; its progress and
    result are not shown (the batch shows one bar over cases, and reads each result from its segment.json)."""

    def __init__(self, case: str, batch: Events) -> None:
        super().__init__()
        self.case, self.batch = case, batch

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.batch.warning(f"{self.case}: {message}")

    def emit(self, kind: str, **fields: Any) -> None:
        pass


def run_batch(args: argparse.Namespace, events: Events, segment_one) -> int:
    """Segment every case of ``args.batch`` with ``segment_one(case_args, case_events)``, then write the summary."""
    given = [f"--{role}" for role in (*ROLES, "reference") if getattr(args, role) is not None]
    if given:
        raise InputError("--batch", f"segments the cases of a folder; give no {', '.join(given)}")
    cases = discover_cases(args.batch, args.out)
    writable_folder(args.out)
    rows = []
    events.progress("cases", 0, len(cases))
    for done, case in enumerate(cases, 1):
        reference = case.reference if "lge" in case.inputs else None  # segment scores a cardiac reference; the batch an abdominal one
        case_args = argparse.Namespace(**{**vars(args), "batch": None, "out": args.out / case.name, "reference": reference,
                                          **{role: case.inputs.get(role) for role in ROLES}})
        case_events = CaseEvents(case.name, events)
        try:
            segment_one(case_args, case_events)
            rows.append(case_row(case, SegmentOutput.read(case_args.out), case_events.warnings))
        except InputError as error:
            events.warning(f"{case.name}: failed, skipped: {error}")
            rows.append({"case": case.name, "status": "failed", "message": str(error), "warnings": len(case_events.warnings)})
        events.progress("cases", done, len(cases))
    outputs = write_summary(rows, args.out)
    failed = [row["case"] for row in rows if row["status"] != "ok"]
    events.result(outputs, cases=len(rows), failed=failed)
    return EXIT_SOME_FAILED if failed else 0


def case_row(case: BatchCase, written: SegmentOutput, warnings: list[str]) -> dict:
    """One line of the summary: status, QA flags, volumes, and Dice of the main result where a reference exists."""
    summary = written.summary
    row: dict[str, Any] = {"case": case.name, "status": "ok", "message": "", "warnings": len(warnings)}
    if summary["task"] == "cardiac":
        row["flagged_slices"] = len(summary.get("disagreeing_slices", []))
        scored = summary.get("dice", {})
        row.update({f"dice {structure}": values["dice"] for structure, values in scored.get(main_mask(scored), {}).items()})
    else:
        row.update({f"volume_ml {organ}": round(ml, 1) for organ, ml in summary["volumes_ml"].items()})
        if case.reference is not None:
            scores = score_images(read_image(written.path(ORGANS_FILE)), read_image(case.reference), ABDOMEN, case.reference, present_only=True)
            row.update({f"dice {organ}": values["dice"] for organ, values in scores.items()})
    return row


def write_summary(rows: list[dict], out: Path) -> dict[str, str]:
    """The table as CSV (one column per field any case has) and JSON (with mean Dice per structure)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_output(out / SUMMARY_CSV) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    dice_columns = [c for c in columns if c.startswith("dice ")]
    mean = {c[len("dice ") :]: float(np.mean([r[c] for r in rows if c in r])) for c in dice_columns}
    with atomic_output(out / SUMMARY_JSON) as partial:
        partial.write_text(json.dumps({"cases": rows, "failed": sum(r["status"] != "ok" for r in rows), "mean_dice": mean}, indent=1) + "\n")
    return {"summary_csv": str(out / SUMMARY_CSV), "summary_json": str(out / SUMMARY_JSON)}
