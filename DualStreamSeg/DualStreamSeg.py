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

from crossmodal_slicer.panel import SegmentationPanel, python_executable
from crossmodal_slicer.selftests import choose_cpu, node_names, open_panel, scratch_models_folder, segment, segment_and_cancel, train_cancel_and_resume

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
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.onModelChanged()

    def onModelChanged(self, index: int = -1) -> None:
        """Offer test-time mirroring only for a model trained for it: any other has never seen a flipped body."""
        self.ui.mirrorCheckBox.enabled = self.logic.supports_mirroring(self.ui.modelSelector.currentData)

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
                                      model=self.ui.modelSelector.currentData, mirror=p.mirror and self.ui.mirrorCheckBox.enabled,
                                      device=self.ui.deviceSelector.currentData, python=python_executable())

    def showResults(self, run) -> None:
        outputs = self.logic.load_results(run, slicer.mrmlScene)
        self.logic.show_results(run, outputs, slicer.mrmlScene)
        slicer.util.setSliceViewerLayers(fit=True)
        volumes = ", ".join(f"{organ} {ml:.0f} mL" for organ, ml in outputs.volumes_ml.items())
        self.status(_("Done ({modality} stream): {volumes}.").format(modality=outputs.modality, volumes=volumes))
        self.showWarnings(outputs.warnings)

    def trainingJob(self, resume: bool):
        p = self._parameterNode
        return self.logic.train(ct=p.trainingCT, mr=p.trainingMR, model_id=p.trainingModelId, variant=p.variant,
                                    steps=p.trainingSteps, resume=resume, device=self.ui.deviceSelector.currentData, python=python_executable())


class DualStreamSegTest(ScriptedLoadableModuleTest):
    """Self-test in real Slicer: the panel driven as a person drives it, on a synthetic CT with the bundled model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_panel_follows_its_parameter_node()
        self.setUp()
        self.test_a_person_segments_overrides_the_modality_and_trains()

    def test_panel_follows_its_parameter_node(self):
        """The .ui and the parameter node wired together in real Slicer; the modality guess shown for a volume."""
        from crossmodal.phantoms import abdominal_volume
        from crossmodal_slicer import conversion

        widget = open_panel("DualStreamSeg")
        volume = conversion.image_to_volume_node(abdominal_volume("MR", seed=2)[0], slicer.mrmlScene, "T2")
        widget._parameterNode.inputVolume = volume
        self.assertIs(widget.ui.inputSelector.currentNode(), volume)
        self.assertIn("MR", widget.ui.guessLabel.text)
        widget.ui.modalitySelector.setCurrentText("CT")
        self.assertEqual(widget._parameterNode.modality, "CT")
        self.assertGreaterEqual(widget.ui.modelSelector.count, 1)  # the bundled model at least
        self.assertEqual(widget.ui.mirrorCheckBox.enabled, widget.logic.supports_mirroring(widget.ui.modelSelector.currentData))

    def test_a_person_segments_overrides_the_modality_and_trains(self):
        """Choose a CT; Segment and Cancel; Segment and wait: organs on the CT's grid, shown over it; the
        modality forced to MR and Segment again: the results replaced, not added; a few training steps,
        Cancel, Resume."""
        import tempfile

        from crossmodal.labels import ABDOMEN
        from crossmodal.phantoms import abdominal_volume, write_nnunet_phantoms
        from crossmodal_slicer import conversion
        from crossmodal_slicer.outputs import output_key, own_outputs

        widget = open_panel("DualStreamSeg")
        ui, scene = widget.ui, slicer.mrmlScene
        image, _labels = abdominal_volume("CT", seed=5)
        volume = conversion.image_to_volume_node(image, scene, "CT")
        ui.inputSelector.setCurrentNode(volume)
        self.assertIn("CT", ui.guessLabel.text)
        self.assertEqual(widget._parameterNode.modality, "auto")
        choose_cpu(widget)

        self.delayDisplay("Segment, then Cancel at once")
        segment_and_cancel(self, widget)

        self.delayDisplay("Segment the synthetic CT with the bundled model")
        segment(self, widget, "Done (CT stream)")
        outputs = {node.GetClassName(): node for node in own_outputs(scene, output_key("DualStreamSeg", volume))}
        segmentation, table = outputs["vtkMRMLSegmentationNode"], outputs["vtkMRMLTableNode"]
        labels = conversion.segmentation_node_to_labelmap(segmentation, ABDOMEN, image)
        self.assertEqual((labels.GetSize(), labels.GetOrigin()), (image.GetSize(), image.GetOrigin()))
        self.assertEqual(table.GetTable().GetNumberOfRows(), 4)
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), volume.GetID())
        self.assertTrue(segmentation.GetDisplayNode().GetVisibility())

        self.delayDisplay("The modality forced to MR, Segment again")
        before = node_names(scene)
        ui.modalitySelector.setCurrentText("MR")
        self.assertEqual(widget._parameterNode.modality, "MR")
        segment(self, widget, "Done (MR stream)")
        self.assertEqual(node_names(scene), before)  # the earlier results replaced (same names), nothing added
        self.assertIsNone(segmentation.GetScene())

        self.delayDisplay("A few training steps on synthetic CT, Cancel, Resume")
        with scratch_models_folder() as models, tempfile.TemporaryDirectory() as data:
            ui.trainingCTPath.currentPath = str(write_nnunet_phantoms(Path(data) / "ct", "CT", subjects=2))
            train_cancel_and_resume(self, widget, models, "selftest-dualstream", steps=20)
        self.delayDisplay("Test passed")
