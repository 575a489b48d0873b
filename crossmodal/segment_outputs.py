"""What ``crossmodal segment`` writes into its output folder, and how every reader finds it: the one home
of that contract (the CLI writes through it; both Slicer modules, ``report --from`` and the demo read
through it). Free of PyTorch, so the Slicer panels import it without loading a network.

A folder holds, besides ``segment.json`` (:data:`SUMMARY_FILE`, written last, listing every output):

* cardiac: one mask per result name (``seg_fused_lge.nii.gz`` for "fused LGE"), the anatomy factors of
  each modality (``anatomy_lge.nii.gz``), the TPS alignment (:data:`ALIGNMENT_FILE`);
* abdominal: the organs (:data:`ORGANS_FILE`);
* with ``--report``: the QA page (:data:`REPORT_FILE`);
* when the segmented image is a DICOM series: the main result as a DICOM SEG (:data:`DICOM_SEG_FILE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from crossmodal.errors import InputError
from crossmodal.image_io import error_line
from crossmodal.output_set import output_key

ALIGNMENT_FILE = "tps_lge_to_cine.nrrd"
"""The TPS alignment as a displacement field (LPS mm, LGE to cine), which Slicer loads as a transform."""
ORGANS_FILE = "organs.nii.gz"
SUMMARY_FILE = "segment.json"
REPORT_FILE = "report.html"
DICOM_SEG_FILE = "segmentation.dcm"
"""The main result as a DICOM Segmentation referencing the segmented DICOM series (when that input is one)."""
MAIN_MASKS = ("fused LGE", "LGE", "cine")
"""Which cardiac mask is *the* result, in order of preference (a reader looks at it first; a DICOM SEG holds it)."""
MASK_TITLES = {"fused LGE": "fused (cine + LGE)", "LGE": "LGE only", "cine": "cine"}
"""How the masks a reader compares are called where people read them (panel node names, the demo's table)."""


def main_mask(available) -> str | None:
    """The first of :data:`MAIN_MASKS` among ``available`` (names of masks), or None."""
    return next((name for name in MAIN_MASKS if name in available), None)


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def mask_file(name: str) -> str:
    """The file of a cardiac result mask ("fused LGE" -> ``seg_fused_lge.nii.gz``)."""
    return f"seg_{_slug(name)}.nii.gz"


def anatomy_file(modality: str) -> str:
    """The file of a modality's anatomy factors: label c = channel c (1..anatomy_channels), 0 = none."""
    return f"anatomy_{_slug(modality)}.nii.gz"


@dataclass(frozen=True)
class SegmentOutput:
    """A finished ``segment`` output folder, trusted through its summary (only the files it lists exist)."""

    folder: Path
    summary: dict

    @classmethod
    def read(cls, folder: Path) -> SegmentOutput:
        """The folder's summary; a clear error where there is none (nothing segmented there, or a foreign folder)."""
        folder = Path(folder)
        try:
            summary = json.loads((folder / SUMMARY_FILE).read_text())
            if not isinstance(summary.get("outputs"), dict) or summary.get("task") not in ("cardiac", "abdominal"):
                raise ValueError("no task or outputs")
        except (OSError, ValueError) as error:
            raise InputError(folder, f"holds no readable {SUMMARY_FILE} of `segment` ({error_line(error)})") from None
        return cls(folder, summary)

    def path(self, file_name: str) -> Path | None:
        """Where the output ``file_name`` (one of this module's names) is, or None when this run did not make it."""
        listed = self.summary["outputs"].get(output_key(file_name))
        return None if listed is None else Path(listed)

    def mask(self, name: str) -> Path | None:
        return self.path(mask_file(name))

    def anatomy(self, modality: str) -> Path | None:
        return self.path(anatomy_file(modality))

    @property
    def warnings(self) -> list[str]:
        return list(self.summary.get("warnings", []))
