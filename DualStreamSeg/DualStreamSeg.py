"""DualStreamSeg: liver, kidneys and spleen on abdominal CT or MR with one dual-stream FCN for both modalities."""

from __future__ import annotations

import sys
from pathlib import Path

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

try:
    import crossmodal  # noqa: F401 - installed with the extension
except ImportError:  # running from a source checkout: the engine sits beside the module folders
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DualStreamSegLib import DualStreamSegLogic, DualStreamSegParameterNode  # noqa: F401 - DualStreamSeg.DualStreamSegLogic for scripting

from crossmodal_slicer.panel import SegmentationPanel, python_executable, wait_in_gui

DICOM_MODALITY = "0008,0060"


class DualStreamSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DualStreamSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["CrossModalSeg team"]
        self.parent.helpText = _(
            "Segments the liver, both kidneys and the spleen on an abdominal CT or MR volume. One dual-stream 3-D residual FCN "
            "serves both modalities (variant V4: modality-specific encoders sharing their last scale, modality-specific decoders), "
            "trained on unpaired CT and MR. The modality is guessed from DICOM tags or intensities and can be overridden."
        )
        self.parent.acknowledgementText = _(
            "Valindria et al., Multi-modal learning from unpaired images: application to multi-organ segmentation in CT and MRI, WACV 2018."
        )


class DualStreamSegWidget(SegmentationPanel):
    MODULE = "DualStreamSeg"
    ARCHITECTURE = "DualStreamFCN"

    def setupPanel(self) -> None:
        self.logic = DualStreamSegLogic()
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)

    def onInputChanged(self, node) -> None:
        """Say which modality the volume looks like: its DICOM Modality tag, else its intensities."""
        if node is None:
            self.ui.guessLabel.text = ""
            return
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        tag = slicer.dicomDatabase.fileValue(slicer.dicomDatabase.fileForInstance(uids[0]), DICOM_MODALITY) if uids and slicer.dicomDatabase else ""
        if tag in ("CT", "MR"):
            self.ui.guessLabel.text = _("{modality} (DICOM tag)").format(modality=tag)
        else:
            self.ui.guessLabel.text = _("looks like {modality} (intensities)").format(modality=self.logic.guess_modality(node))

    def startSegmentation(self):
        p = self._parameterNode
        return self.logic.segment(p.inputVolume, modality=None if p.modality == "auto" else p.modality,
                                      model=self.ui.modelSelector.currentData, device=self.ui.deviceSelector.currentData,
                                      python=python_executable())

    def showResults(self, run) -> None:
        outputs = self.logic.load_results(run, slicer.mrmlScene)
        self.logic.show_results(run, outputs, slicer.mrmlScene)
        slicer.util.setSliceViewerLayers(fit=True)
        volumes = ", ".join(f"{organ} {ml:.0f} mL" for organ, ml in outputs.volumes_ml.items())
        self.status(_("Done ({modality} stream): {volumes}.").format(modality=outputs.modality, volumes=volumes))

    def trainingJob(self, resume: bool):
        p = self._parameterNode
        return self.logic.train(ct=p.trainingCT, mr=p.trainingMR, model_id=p.trainingModelId, variant=p.variant,
                                    steps=p.trainingSteps, resume=resume, device=self.ui.deviceSelector.currentData, python=python_executable())


class DualStreamSegTest(ScriptedLoadableModuleTest):
    """Self-test in real Slicer: a synthetic CT through the bundled model, organs checked on the input grid."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_panel_follows_its_parameter_node()
        self.setUp()
        self.test_segment_phantom_ct()

    def test_panel_follows_its_parameter_node(self):
        """The .ui and the parameter node wired together in real Slicer; the modality guess shown for a volume."""
        from crossmodal.phantoms import abdominal_volume
        from crossmodal_slicer import conversion

        widget = slicer.util.getModuleWidget("DualStreamSeg")
        widget.enter()
        volume = conversion.image_to_volume_node(abdominal_volume("MR", seed=2)[0], slicer.mrmlScene, "T2")
        widget._parameterNode.inputVolume = volume
        self.assertIs(widget.ui.inputSelector.currentNode(), volume)
        self.assertIn("MR", widget.ui.guessLabel.text)
        widget.ui.modalitySelector.setCurrentText("CT")
        self.assertEqual(widget._parameterNode.modality, "CT")
        self.assertGreaterEqual(widget.ui.modelSelector.count, 1)  # the bundled model at least

    def test_segment_phantom_ct(self):
        from crossmodal.labels import ABDOMEN
        from crossmodal.phantoms import abdominal_volume
        from crossmodal_slicer import conversion

        self.delayDisplay("Segmenting a synthetic CT")
        image, _labels = abdominal_volume("CT", seed=5)
        volume = conversion.image_to_volume_node(image, slicer.mrmlScene, "CT")
        logic = DualStreamSegLogic()
        self.assertEqual(logic.guess_modality(volume), "CT")
        run = logic.segment(volume, device="cpu", python=python_executable())
        self.assertEqual(wait_in_gui(run.job), 0, run.job.failure())
        outputs = logic.load_results(run, slicer.mrmlScene)
        labels = conversion.segmentation_node_to_labelmap(outputs.segmentation, ABDOMEN, image)
        self.assertEqual(labels.GetSize(), image.GetSize())
        self.assertEqual(outputs.volumes_table.GetTable().GetNumberOfRows(), 4)
        logic.discard(run)
        self.delayDisplay("Test passed")
