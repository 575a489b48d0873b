"""DualStreamSegLogic (MRML, no Qt): a CT or MR volume through the dual-stream FCN in a child process.

Outputs, tagged as this module's for the input volume (re-running replaces them, and nothing else):
a segmentation node with liver, right kidney, left kidney and spleen (named, coloured, standard
terminology) on the input's own grid, and a table of organ volumes in mL.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from crossmodal.abdominal import MODALITIES, guess_modality, require_volume
from crossmodal.bundles import read_card
from crossmodal.catalog import user_models_folder
from crossmodal.errors import InputError
from crossmodal.image_io import read_image
from crossmodal.jobs import ChildJob
from crossmodal.labels import ABDOMEN
from crossmodal.segment_outputs import ORGANS_FILE
from crossmodal_slicer import conversion, runs
from crossmodal_slicer.outputs import mark, output_key, remove_outputs
from crossmodal_slicer.scene import show_layers, show_only, table_node
from DualStreamSegLib.parameters import DualStreamSegParameterNode


@dataclass
class AbdominalRun:
    job: ChildJob
    folder: Path
    volume: object


@dataclass
class AbdominalOutputs:
    segmentation: object
    volumes_table: object
    modality: str
    volumes_ml: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    """What the plausibility checks found (field of view, organ volumes and sides), naming the user's volume."""


class DualStreamSegLogic(ScriptedLoadableModuleLogic):
    """Everything DualStreamSeg does to data and to the scene; the panel only reads the GUI and calls it.

    From Slicer's Python console: ``DualStreamSeg.DualStreamSegLogic().segment(volume)``, then
    ``load_results(run, slicer.mrmlScene)`` once ``run.job`` has finished.
    """

    def getParameterNode(self) -> DualStreamSegParameterNode:
        """The scene's parameter node of this module (made once per scene, tagged "DualStreamSeg")."""
        return DualStreamSegParameterNode(super().getParameterNode())

    @staticmethod
    def guess_modality(volume) -> str:
        """CT or MR, from the intensities (the panel may override it, e.g. from the DICOM Modality tag)."""
        return guess_modality(conversion.volume_node_to_image(volume))[0]

    @staticmethod
    def supports_mirroring(model_folder: str | None) -> bool:
        """Whether the model in ``model_folder`` (a model selector's data) was trained for test-time mirroring."""
        return bool(model_folder) and read_card(Path(model_folder)).trained_mirrored

    def segment(self, volume, *, modality: str | None = None, model: str | None = None, mirror: bool = False, device: str = "auto",
                python: str | None = None) -> AbdominalRun:
        if volume is None:
            raise InputError("volume", "no CT or MR volume is selected")
        if volume.GetImageData() is None:
            raise InputError(volume.GetName(), "holds no image data")
        require_volume(volume.GetImageData().GetDimensions(), volume.GetSpacing(), volume.GetName())
        if modality is not None and modality not in MODALITIES:
            raise InputError("modality", f"must be one of {', '.join(MODALITIES)}")
        folder, paths = runs.write_inputs(runs.input_images({"image": volume}), "dualstreamseg")
        arguments = ["segment", "--image", str(paths["image"]), "--out", str(runs.output_folder(folder))]
        arguments += ["--modality", modality] if modality else []
        arguments += ["--model", model] if model else []
        arguments += ["--mirror"] if mirror else []
        return AbdominalRun(runs.start(arguments, python, device, runs.user_names(paths, {"image": volume})), folder, volume)

    def load_results(self, run: AbdominalRun, scene) -> AbdominalOutputs:
        written = runs.finished_output(run.job, run.folder, run.volume, scene)
        summary = written.summary
        key = output_key(self.moduleName, run.volume)
        remove_outputs(scene, key)
        name = run.volume.GetName()
        labels = read_image(written.path(ORGANS_FILE))
        segmentation = mark(conversion.labelmap_to_segmentation_node(labels, ABDOMEN, scene, f"{name} organs"), key)
        rows = [[organ, ml] for organ, ml in summary["volumes_ml"].items()]
        table = table_node(scene, f"{name} organ volumes", ["organ", "volume (mL)"], rows, key)
        return AbdominalOutputs(segmentation, table, summary["modality"], summary["volumes_ml"], summary["warnings"])

    @staticmethod
    def show_results(run: AbdominalRun, outputs: AbdominalOutputs, scene) -> None:
        """What the panel shows in every slice view: the volume with the organs over it."""
        show_layers(scene, background=run.volume, foreground=None, label=None)
        show_only([outputs.segmentation], outputs.segmentation)

    def train(self, *, ct: Path | None, mr: Path | None, model_id: str, variant: str = "V4", steps: int = 3000, resume: bool = False,
              device: str = "auto", python: str | None = None) -> ChildJob:
        """Start ``crossmodal train`` of a dual-stream FCN on nnU-Net-layout CT and/or MR folders, into the user models folder,
        with the bundled model's recipe and the user's choices."""
        data = {flag: str(folder) for flag, folder in (("ct", runs.chosen_folder(ct)), ("mr", runs.chosen_folder(mr))) if folder}
        if not data:
            raise InputError("training data", "choose a CT folder, an MR folder or both (nnU-Net layout)")
        choices = {"id": model_id, "variant": variant, "steps": int(steps)}
        return runs.start_training("abdominal", choices, data, user_models_folder() / model_id, resume=resume, python=python, device=device)

    def discard(self, run: AbdominalRun) -> None:
        shutil.rmtree(run.folder, ignore_errors=True)
