"""DualStreamSeg: liver, kidneys and spleen on abdominal CT or MR with one dual-stream FCN for both modalities."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

try:
    import crossmodal  # noqa: F401 - installed with the extension
except ImportError:  # running from a source checkout: the engine sits beside the module folders
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DualStreamSegLib import DualStreamSegLogic as AbdominalLogic

from crossmodal import module_logic
from crossmodal_slicer.panel import JobMonitor, ensure_dependencies, fill_devices, fill_models, python_executable

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


@parameterNodeWrapper
class DualStreamSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    modality: Annotated[str, Choice(["auto", "CT", "MR"])] = "auto"
    trainingCT: Path
    trainingMR: Path
    trainingModelId: str = "my-dualstream"
    variant: Annotated[str, Choice(["V4", "V3", "V2", "V1", "Joint", "Individual"])] = "V4"
    trainingSteps: Annotated[int, WithinRange(10, 200000)] = 3000


class DualStreamSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.monitor = None
        self.run = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DualStreamSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DualStreamSegModuleLogic()
        self.abdominal = AbdominalLogic()
        fill_devices(self.ui.deviceSelector)
        self.refreshModels()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.trainButton.connect("clicked(bool)", lambda: self.onTrain(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onTrain(resume=True))
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def refreshModels(self) -> None:
        fill_models(self.ui.modelSelector, module_logic.models_for("DualStreamFCN"))

    def updateButtons(self, busy: bool = False) -> None:
        for button in (self.ui.segmentButton, self.ui.trainButton, self.ui.resumeButton):
            button.enabled = not busy
        self.ui.cancelButton.enabled = busy

    def status(self, text: str) -> None:
        self.ui.statusLabel.text = text
        self.ui.logText.appendPlainText(text)

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
            self.ui.guessLabel.text = _("looks like {modality} (intensities)").format(modality=self.abdominal.guess_modality(node))

    def onSegment(self) -> None:
        if not ensure_dependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            modality = None if p.modality == "auto" else p.modality
            self.run = self.abdominal.segment(p.inputVolume, modality=modality, model=self.ui.modelSelector.currentData,
                                              device=self.ui.deviceSelector.currentData, python=python_executable())
            self.status(_("Segmenting in the background ..."))
            self.monitor = JobMonitor(self.run.job, self.ui.progressBar, self.ui.logText, None, self.onSegmentationFinished)
            self.updateButtons(busy=True)

    def onSegmentationFinished(self, job) -> None:
        self.updateButtons(busy=False)
        run, self.run = self.run, None
        failure = job.failure()
        if failure:
            self.status(_("Failed: {failure}").format(failure=failure))
            slicer.util.errorDisplay(failure, windowTitle="DualStreamSeg")
        else:
            with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
                outputs = self.abdominal.load_results(run, slicer.mrmlScene)
                outputs.segmentation.CreateDefaultDisplayNodes()
                slicer.util.setSliceViewerLayers(background=run.volume, fit=True)
                volumes = ", ".join(f"{organ} {ml:.0f} mL" for organ, ml in outputs.volumes_ml.items())
                self.status(_("Done ({modality} stream): {volumes}.").format(modality=outputs.modality, volumes=volumes))
        self.abdominal.discard(run)

    def onCancel(self) -> None:
        if self.monitor is not None:
            self.monitor.cancel()

    def onTrain(self, resume: bool) -> None:
        if not ensure_dependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the training."), waitCursor=True):
            ct = p.trainingCT if str(p.trainingCT) not in ("", ".") else None
            mr = p.trainingMR if str(p.trainingMR) not in ("", ".") else None
            job = self.abdominal.train(ct=ct, mr=mr, model_id=p.trainingModelId, variant=p.variant, steps=p.trainingSteps, resume=resume,
                                       device=self.ui.deviceSelector.currentData, python=python_executable())
            key = f"DualStreamSeg/training/{p.trainingModelId}"
            module_logic.remove_outputs(slicer.mrmlScene, key)
            table, chart = module_logic.training_plot(slicer.mrmlScene, p.trainingModelId, key)
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            self.monitor = JobMonitor(job, self.ui.trainingProgressBar, self.ui.logText,
                                      lambda events: module_logic.append_metrics(table, events), self.onTrainingFinished)
            self.status(_("Training in the background; Cancel keeps a checkpoint that Resume continues from."))
            self.updateButtons(busy=True)

    def onTrainingFinished(self, job) -> None:
        self.updateButtons(busy=False)
        failure = job.failure()
        if failure:
            self.status(_("Training stopped: {failure}").format(failure=failure))
            return
        self.refreshModels()
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.findText(self._parameterNode.trainingModelId))
        self.status(_("Training finished; the model is now in the model list."))


class DualStreamSegModuleLogic(ScriptedLoadableModuleLogic):
    """Holds the parameter node; the work itself is in :mod:`DualStreamSegLib` (tested outside Slicer)."""

    def getParameterNode(self):
        return DualStreamSegParameterNode(super().getParameterNode())


class DualStreamSegTest(ScriptedLoadableModuleTest):
    """Self-test in real Slicer: a synthetic CT through the bundled model, organs checked on the input grid."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_phantom_ct()

    def test_segment_phantom_ct(self):
        from crossmodal import mrml
        from crossmodal.labels import ABDOMEN
        from crossmodal.phantoms import abdominal_volume

        self.delayDisplay("Segmenting a synthetic CT")
        image, _labels = abdominal_volume("CT", seed=5)
        volume = mrml.image_to_volume_node(image, slicer.mrmlScene, "CT")
        logic = AbdominalLogic()
        self.assertEqual(logic.guess_modality(volume), "CT")
        run = logic.segment(volume, device="cpu", python=python_executable())
        while run.job.running:
            slicer.app.processEvents()
            run.job.poll()
        self.assertEqual(run.job.wait(), 0, run.job.failure())
        outputs = logic.load_results(run, slicer.mrmlScene)
        labels = mrml.segmentation_node_to_labelmap(outputs.segmentation, ABDOMEN, image)
        self.assertEqual(labels.GetSize(), image.GetSize())
        self.assertEqual(outputs.volumes_table.GetTable().GetNumberOfRows(), 4)
        logic.discard(run)
        self.delayDisplay("Test passed")
