"""MultiModalSeg: myocardium and LV on cardiac LGE MR, helped by the cine of the same patient (MMSDNet)."""

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

from MultiModalSegLib import MultiModalSegLogic, MultiModalSegParameterNode  # noqa: F401 - MultiModalSeg.MultiModalSegLogic for scripting
from MultiModalSegLib.logic import last_frame

from crossmodal_slicer.panel import SegmentationPanel, python_executable
from crossmodal_slicer.selftests import choose_cpu, open_panel, scratch_models_folder, segment, segment_and_cancel, train_cancel_and_resume


class MultiModalSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MultiModalSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["CrossModalSeg team"]
        self.parent.helpText = _(
            "Segments the myocardium and the left ventricle on a cardiac LGE MR, using the cine (bSSFP) of the same patient: "
            "MMSDNet disentangles anatomy from imaging, aligns the cine anatomy to the LGE with a thin-plate spline and fuses them; "
            "the bundled model averages its LGE results with a U-Net's on the LGE. "
            "Results: segmentations (fused, LGE only, cine), the anatomy factors, the alignment as a transform, QA tables. "
            "It can also train a model on your own MS-CMRSeg-layout data."
        )
        self.parent.acknowledgementText = _("Chartsias et al., Multimodal cardiac segmentation using disentangled representation learning, STACOM 2019.")


class MultiModalSegWidget(SegmentationPanel):
    MODULE = "MultiModalSeg"
    ARCHITECTURE = "MMSDNet"

    def setupPanel(self) -> None:
        self.logic = MultiModalSegLogic()
        self.outputs = None
        self.ui.sideBySideButton.connect("clicked(bool)", self.onSideBySide)
        self.ui.nextFlaggedButton.connect("clicked(bool)", self.onNextFlagged)
        self.flagged = 0
        self.ui.cineSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onCineChanged)
        self.ui.anatomyChannelSpinBox.connect("valueChanged(int)", self.onAnatomyChannel)
        self.ui.showAlignedCineCheckBox.connect("toggled(bool)", self.onShowAlignedCine)

    # --- segmentation -----------------------------------------------------------------------

    def onCineChanged(self, node) -> None:
        """A cine sequence needs a frame: enable the frame choice, bounded by its number of frames."""
        last = last_frame(node)
        self.ui.cineFrameSpinBox.enabled = last is not None
        if last is not None:
            self.ui.cineFrameSpinBox.maximum = last

    def onParameterNodeConnected(self) -> None:
        self.onCineChanged(self._parameterNode.cineVolume)

    def cineShown(self):
        """The scene node that shows the chosen cine: the volume, or the proxy of the sequence at the chosen frame."""
        cine = self._parameterNode.cineVolume
        if cine is None or not cine.IsA("vtkMRMLSequenceNode"):
            return cine
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(cine)
        if browser is None:
            return None
        browser.SetSelectedItemNumber(self._parameterNode.cineFrame)
        return browser.GetProxyNode(cine)

    def startSegmentation(self):
        p = self._parameterNode
        return self.logic.segment(p.lgeVolume, p.cineVolume, p.referenceSegmentation, cine_frame_index=p.cineFrame,
                                      model=self.ui.modelSelector.currentData, device=self.ui.deviceSelector.currentData,
                                      python=python_executable())

    def showResults(self, run) -> None:
        self.outputs = outputs = self.logic.load_results(run, slicer.mrmlScene)
        if "LGE" in outputs.anatomy:
            self.ui.anatomyChannelSpinBox.maximum = len(outputs.anatomy["LGE"])
        self.showOutputs()
        slicer.util.setSliceViewerLayers(fit=True)
        flagged = ", ".join(map(str, outputs.flagged_slices)) or _("none")
        self.ui.flagsLabel.text = _("Slices where LGE-only and fused disagree (look at them): {slices}").format(slices=flagged)
        self.ui.nextFlaggedButton.enabled = bool(outputs.flagged_slices)
        self.flagged = 0
        if outputs.dice_table is not None:
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(outputs.dice_table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        self.status(_("Done."))
        self.showWarnings(outputs.warnings)

    def showOutputs(self, anatomyChannel: int | None = None, alignedCine: bool | None = None) -> None:
        """The results in the slice views as the logic lays them out; a toggle passes its new value (its
        signal may reach this slot before it reaches the parameter node)."""
        p = self._parameterNode
        if self.outputs and self.outputs.lge.GetScene() is not None:
            self.logic.show_results(self.outputs, slicer.mrmlScene, anatomy_channel=p.anatomyChannel if anatomyChannel is None else int(anatomyChannel),
                                    aligned_cine=p.showAlignedCine if alignedCine is None else bool(alignedCine))

    def onNextFlagged(self) -> None:
        """Centre the viewers on the next flagged LGE slice, round and round."""
        if not self.outputs or self.outputs.lge.GetScene() is None:
            return
        slices = self.logic.flagged_slice_centres(self.outputs)
        if not slices:
            return
        k, (r, a, s) = slices[self.flagged % len(slices)]
        self.flagged += 1
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        self.status(_("LGE slice {slice}").format(slice=k))

    def onAnatomyChannel(self, value) -> None:
        """Show one anatomy channel of the LGE as the label layer."""
        self.showOutputs(anatomyChannel=value)

    def onShowAlignedCine(self, show: bool) -> None:
        self.showOutputs(alignedCine=show)

    def onSideBySide(self) -> None:
        """Cine and LGE side by side with linked slices."""
        p = self._parameterNode
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for view, volume in (("Red", p.lgeVolume), ("Yellow", self.cineShown())):
            widget = layoutManager.sliceWidget(view)
            if widget is not None and volume is not None:
                widget.mrmlSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
                widget.mrmlSliceCompositeNode().SetLinkedControl(True)
                widget.sliceLogic().FitSliceToAll()

    # --- training ---------------------------------------------------------------------------

    def trainingJob(self, resume: bool):
        p = self._parameterNode
        return self.logic.train(p.trainingData, model_id=p.trainingModelId, lge_fraction=p.lgeMaskPercent / 100, steps=p.trainingSteps,
                                  resume=resume, device=self.ui.deviceSelector.currentData, python=python_executable())


class MultiModalSegTest(ScriptedLoadableModuleTest):
    """Self-test in real Slicer: the panel driven as a person drives it, on a synthetic cine + LGE pair with the bundled model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_panel_follows_its_parameter_node()
        self.setUp()
        self.test_a_person_segments_inspects_the_results_and_trains()

    def test_panel_follows_its_parameter_node(self):
        """The .ui, the parameter node and the cine-sequence frame choice, wired together in real Slicer."""
        widget = open_panel("MultiModalSeg")
        lge = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "LGE")
        widget._parameterNode.lgeVolume = lge
        self.assertIs(widget.ui.lgeSelector.currentNode(), lge)
        sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine sequence")
        for frame in range(3):
            sequence.SetDataNodeAtValue(slicer.vtkMRMLScalarVolumeNode(), str(frame))
        widget.ui.cineSelector.setCurrentNode(sequence)
        self.assertIs(widget._parameterNode.cineVolume, sequence)
        self.assertTrue(widget.ui.cineFrameSpinBox.enabled)
        self.assertEqual(widget.ui.cineFrameSpinBox.maximum, 2)
        widget.ui.cineFrameSpinBox.value = 2
        self.assertEqual(widget._parameterNode.cineFrame, 2)
        self.assertGreaterEqual(widget.ui.modelSelector.count, 1)  # the bundled model at least

    def test_a_person_segments_inspects_the_results_and_trains(self):
        """Choose the LGE, cine and a reference; Segment and Cancel; Segment and wait; the results laid out;
        anatomy channel, aligned cine off, side by side, next flagged slice; a few training steps, Cancel, Resume."""
        import tempfile

        import numpy as np

        from crossmodal.labels import CARDIAC_MYO_LV
        from crossmodal.phantoms import cardiac_pair, write_mscmrseg_phantoms
        from crossmodal_slicer import conversion

        widget = open_panel("MultiModalSeg")
        ui, scene = widget.ui, slicer.mrmlScene
        pair = cardiac_pair(seed=7)
        lge = conversion.image_to_volume_node(pair.lge, scene, "LGE")
        cine = conversion.image_to_volume_node(pair.cine, scene, "cine")
        reference = conversion.image_to_volume_node(pair.lge_mask, scene, "LGE reference", labelmap=True)
        ui.lgeSelector.setCurrentNode(lge)
        ui.cineSelector.setCurrentNode(cine)
        ui.referenceSelector.setCurrentNode(reference)
        self.assertFalse(ui.cineFrameSpinBox.enabled)  # one cine volume: no frame to choose
        choose_cpu(widget)

        self.delayDisplay("Segment, then Cancel at once")
        segment_and_cancel(self, widget)

        self.delayDisplay("Segment the synthetic pair with the bundled model")
        segment(self, widget, "Done.")
        outputs = widget.outputs
        fused = conversion.segmentation_node_to_labelmap(outputs.main_segmentation, CARDIAC_MYO_LV, pair.lge)
        self.assertTrue(np.allclose(fused.GetOrigin(), pair.lge.GetOrigin()) and fused.GetSize() == pair.lge.GetSize())
        layout = slicer.app.layoutManager()
        self.assertEqual(layout.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)  # the Dice table beside the views
        red = layout.sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), lge.GetID())
        self.assertEqual(red.GetForegroundVolumeID(), outputs.aligned_cine.GetID())
        self.assertIsNotNone(outputs.aligned_cine.GetParentTransformNode())  # shown under the TPS alignment
        self.assertEqual(red.GetLabelVolumeID(), outputs.anatomy["LGE"][0].GetID())
        self.assertTrue(outputs.main_segmentation.GetDisplayNode().GetVisibility())

        self.delayDisplay("Anatomy channel 3, the aligned cine hidden")
        ui.anatomyChannelSpinBox.value = 3
        self.assertEqual(red.GetLabelVolumeID(), outputs.anatomy["LGE"][2].GetID())
        ui.showAlignedCineCheckBox.checked = False
        self.assertIsNone(red.GetForegroundVolumeID())
        self.assertFalse(widget._parameterNode.showAlignedCine)

        self.delayDisplay("Cine and LGE side by side")
        ui.sideBySideButton.click()
        self.assertEqual(layout.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        self.assertEqual(layout.sliceWidget("Yellow").mrmlSliceCompositeNode().GetBackgroundVolumeID(), cine.GetID())

        self.delayDisplay("Next flagged slice")
        centres = widget.logic.flagged_slice_centres(outputs)
        self.assertEqual(ui.nextFlaggedButton.enabled, bool(centres))
        for k, ras in centres[:2]:
            ui.nextFlaggedButton.click()
            offset = layout.sliceWidget("Red").mrmlSliceNode().GetSliceToRAS()
            self.assertTrue(np.allclose([offset.GetElement(i, 3) for i in range(3)], ras, atol=0.5), (k, ras))
            self.assertEqual(ui.statusLabel.text, f"LGE slice {k}")

        self.delayDisplay("A few training steps on synthetic MS-CMRSeg data, Cancel, Resume")
        with scratch_models_folder() as models, tempfile.TemporaryDirectory() as data:
            ui.trainingDataPath.currentPath = str(write_mscmrseg_phantoms(Path(data) / "mscmrseg", labelled=3))
            train_cancel_and_resume(self, widget, models, "selftest-mmsdnet", steps=20)
        self.delayDisplay("Test passed")
