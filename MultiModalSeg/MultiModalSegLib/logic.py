"""MultiModalSegLogic (MRML, no Qt): a cine + LGE pair through MMSDNet in a child process, results into the scene.

Outputs, all tagged as this module's for the LGE input (re-running replaces them, and nothing else):

* a segmentation node per output: fused on the LGE, LGE only, cine (myocardium, LV; named, coloured,
  with standard terminology), each on its input's own grid;
* the 8 anatomy factors of each modality as binary labelmap volumes in a subject-hierarchy folder;
* the TPS alignment as a transform node, and the cine (a new node sharing nothing with the input)
  under it, so it shows aligned over the LGE;
* with a reference mask: a table of Dice and HD95 (fused, LGE only, cine aligned, cine copied);
* a table of per-slice agreement between the LGE-only and the fused masks, with QA flags.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from crossmodal.catalog import user_models_folder
from crossmodal.datasets import discover_mscmrseg
from crossmodal.errors import InputError
from crossmodal.geometry import Grid
from crossmodal.image_io import read_image
from crossmodal.jobs import ChildJob
from crossmodal.labels import CARDIAC_MYO_LV, MSCMRSEG
from crossmodal.qa import reference_rows, require_reference
from crossmodal.segment_outputs import ALIGNMENT_FILE, MASK_TITLES, main_mask
from crossmodal_slicer import conversion, runs
from crossmodal_slicer.outputs import mark, output_key, remove_outputs
from crossmodal_slicer.scene import place_in_folder, read_transform, show_layers, show_only, slice_centre_ras, subject_folder, table_node
from MultiModalSegLib.parameters import MultiModalSegParameterNode

VALIDATING = 2
"""Fully labelled pairs of the user's folder that choose the checkpoint of a panel training (the highest-numbered)."""


@dataclass
class CardiacRun:
    """A segmentation running in a child process, and what it was started with."""

    job: ChildJob
    folder: Path
    lge: object
    cine: object | None
    """The cine volume used: the selected volume, or the chosen frame of a selected sequence."""
    cine_name: str
    reference: object | None


@dataclass
class CardiacOutputs:
    lge: object
    """The LGE volume node the outputs belong to."""
    segmentations: dict[str, object] = field(default_factory=dict)
    """Result name ("fused LGE", "LGE", "cine") -> its segmentation node."""
    anatomy: dict[str, list[object]] = field(default_factory=dict)
    """Per modality: its anatomy channel volumes (8 in the paper), in order."""
    transform: object | None = None
    aligned_cine: object | None = None
    dice_table: object | None = None
    agreement_table: object | None = None
    flagged_slices: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the plausibility checks found (e.g. the hearts far apart in the two images), naming the user's volumes."""

    @property
    def main_segmentation(self):
        """The segmentation a reader looks at first (:data:`~crossmodal.segment_outputs.MAIN_MASKS`): fused with the cine, else the LGE alone."""
        return self.segmentations.get(main_mask(self.segmentations))


def cine_frame(cine, frame: int = 0) -> tuple[object | None, str]:
    """The cine volume to segment with, and its name: ``cine`` itself, or frame ``frame`` of a cine sequence.

    A 4-D cine loaded in Slicer is a sequence node of 3-D volumes (one per cardiac phase); MMSDNet pairs
    one phase, usually end-diastole, with the LGE.
    """
    if cine is None or not cine.IsA("vtkMRMLSequenceNode"):
        return cine, cine.GetName() if cine is not None else ""
    count = cine.GetNumberOfDataNodes()
    if not 0 <= frame < count:
        raise InputError(cine.GetName(), f"has {count} frames (0..{count - 1}); frame {frame} does not exist")
    volume = cine.GetNthDataNode(frame)
    if volume is None or not volume.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(cine.GetName(), f"holds {cine.GetDataNodeClassName() or 'nothing'}, not cine volumes")
    return volume, f"{cine.GetName()} frame {frame}"


def last_frame(cine) -> int | None:
    """The last frame index of a cine sequence (the panel's frame limit); ``None`` for a volume or nothing."""
    if cine is None or not cine.IsA("vtkMRMLSequenceNode"):
        return None
    return max(0, cine.GetNumberOfDataNodes() - 1)


def reference_labels(reference, lge) -> sitk.Image:
    """A reference (labelmap volume, or segmentation with myocardium / LV / RV segments) as MS-CMRSeg values on the LGE grid."""
    if reference.IsA("vtkMRMLSegmentationNode"):
        return conversion.segmentation_node_to_labelmap(reference, MSCMRSEG, conversion.volume_node_to_image(lge))
    return conversion.volume_node_to_image(reference)


class MultiModalSegLogic(ScriptedLoadableModuleLogic):
    """Everything MultiModalSeg does to data and to the scene; the panel only reads the GUI and calls it.

    From Slicer's Python console: ``MultiModalSeg.MultiModalSegLogic().segment(lge, cine)``, then
    ``load_results(run, slicer.mrmlScene)`` once ``run.job`` has finished.
    """

    def getParameterNode(self) -> MultiModalSegParameterNode:
        """The scene's parameter node of this module (made once per scene, tagged "MultiModalSeg")."""
        return MultiModalSegParameterNode(super().getParameterNode())

    def segment(self, lge, cine=None, reference=None, *, cine_frame_index: int = 0, model: str | None = None, device: str = "auto",
                python: str | None = None) -> CardiacRun:
        """Write the inputs out and start ``crossmodal segment`` on them; returns at once.

        ``cine`` is a volume or a cine sequence, of which frame ``cine_frame_index`` is used.
        """
        if lge is None:
            raise InputError("LGE", "no LGE volume is selected")
        cine, cine_name = cine_frame(cine, cine_frame_index)
        images = runs.input_images({"LGE": lge, **({"cine": cine} if cine is not None else {})})
        if cine is not None and Grid.of(images["LGE"]).disjoint(Grid.of(images["cine"])):
            raise InputError(f"{cine_name} and {lge.GetName()}", "do not overlap in physical space: images of another patient or scan, or a wrong header")
        if reference is not None:
            images["reference"] = require_reference(reference_labels(reference, lge), reference.GetName(), images["LGE"])
        folder, paths = runs.write_inputs(images, "multimodalseg")
        arguments = ["segment", "--lge", str(paths["LGE"]), "--out", str(runs.output_folder(folder))]
        if cine is not None:
            arguments += ["--cine", str(paths["cine"])]
        if reference is not None:
            arguments += ["--reference", str(paths["reference"])]
        if model:
            arguments += ["--model", model]
        names = runs.user_names(paths, {"LGE": lge, "cine": cine, "reference": reference})
        return CardiacRun(runs.start(arguments, python, device, names), folder, lge, cine, cine_name, reference)

    def load_results(self, run: CardiacRun, scene) -> CardiacOutputs:
        """Put a finished run's outputs into ``scene`` (replacing this module's earlier ones for the same LGE)."""
        written = runs.finished_output(run.job, run.folder, run.lge, scene)
        summary = written.summary
        key = output_key(self.moduleName, run.lge)
        remove_outputs(scene, key)
        outputs = CardiacOutputs(run.lge)
        base = run.lge.GetName()
        for name, title in MASK_TITLES.items():
            if written.mask(name) is not None:
                node = conversion.labelmap_to_segmentation_node(read_image(written.mask(name)), CARDIAC_MYO_LV, scene, f"{base} MMSDNet {title}")
                outputs.segmentations[name] = mark(node, key)
        folder = subject_folder(scene, f"{base} MMSDNet anatomy factors", key)
        for modality in ("LGE", "cine"):
            if written.anatomy(modality) is not None:
                labels = read_image(written.anatomy(modality))
                channels = []
                for channel in range(1, summary["anatomy_channels"] + 1):
                    binary = sitk.Cast(labels == channel, sitk.sitkUInt8)
                    node = mark(conversion.image_to_volume_node(binary, scene, f"{base} anatomy {modality} {channel}", labelmap=True), key)
                    place_in_folder(scene, node, folder)
                    channels.append(node)
                outputs.anatomy[modality] = channels
        if written.path(ALIGNMENT_FILE) is not None and run.cine is not None:
            outputs.transform = read_transform(written.path(ALIGNMENT_FILE), scene, f"{base} MMSDNet TPS alignment", key)
            cine = conversion.volume_node_to_image(run.cine)
            outputs.aligned_cine = mark(conversion.image_to_volume_node(cine, scene, f"{run.cine_name} aligned to {base}"), key)
            outputs.aligned_cine.SetAndObserveTransformNodeID(outputs.transform.GetID())
        if "dice" in summary:
            outputs.dice_table = table_node(scene, f"{base} MMSDNet Dice", *reference_rows(summary["dice"]), key)
        agreement = summary.get("slice_agreement", [])
        outputs.flagged_slices = summary.get("disagreeing_slices", [])
        outputs.warnings = written.warnings
        if any(a is not None for a in agreement):
            rows = [[str(i), np.nan if a is None else a, float(i in outputs.flagged_slices)] for i, a in enumerate(agreement)]
            outputs.agreement_table = table_node(scene, f"{base} MMSDNet slice agreement", ["LGE slice", "Dice LGE-only vs fused", "flag"], rows, key)
        return outputs

    @staticmethod
    def show_results(outputs: CardiacOutputs, scene, *, aligned_cine: bool = True, anatomy_channel: int | None = 1) -> None:
        """What the panel shows in every slice view: the LGE, the TPS-aligned cine blended over it at half
        opacity, one LGE anatomy channel as the label layer, and the main segmentation alone."""
        anatomy = outputs.anatomy.get("LGE", [])
        label = anatomy[anatomy_channel - 1] if anatomy_channel and 0 < anatomy_channel <= len(anatomy) else None
        show_layers(scene, background=outputs.lge, foreground=outputs.aligned_cine if aligned_cine else None, foreground_opacity=0.5,
                    label=label, label_opacity=0.5)
        show_only(outputs.segmentations.values(), outputs.main_segmentation)

    @staticmethod
    def flagged_slice_centres(outputs: CardiacOutputs) -> list[tuple[int, tuple[float, float, float]]]:
        """(LGE slice, its RAS centre) of each flagged slice: where the viewers jump to show it."""
        return [(k, slice_centre_ras(outputs.lge, k)) for k in outputs.flagged_slices]

    def train(self, data: Path, *, model_id: str, lge_fraction: float = 1.0, steps: int = 1500, resume: bool = False,
              device: str = "auto", python: str | None = None) -> ChildJob:
        """Start ``crossmodal train`` of an MMSDNet on an MS-CMRSeg-layout folder, into the user models folder.

        The bundled model's recipe, with the user's choices; the last :data:`VALIDATING` fully labelled pairs of
        the folder validate (checkpoint choice), the rest train.
        """
        data = runs.chosen_folder(data)
        if data is None:
            raise InputError("training data", "choose an MS-CMRSeg folder (patient{N}_C0/DE[_manual].nii.gz)")
        labelled = sorted(c.patient for c in discover_mscmrseg(data) if c.is_pair and c.has_mask("DE") and c.has_mask("C0"))
        if len(labelled) <= VALIDATING:
            raise InputError(data, f"holds {len(labelled)} fully labelled cine + LGE pairs; training needs more than the {VALIDATING} that validate")
        choices = {"id": model_id, "steps": int(steps), "lge_fraction": float(lge_fraction), "validation": VALIDATING}
        return runs.start_training("cardiac", choices, {"data": str(data)}, user_models_folder() / model_id, resume=resume, python=python, device=device)

    def discard(self, run: CardiacRun) -> None:
        """Remove a run's temporary files (inputs written out, outputs read back)."""
        shutil.rmtree(run.folder, ignore_errors=True)
