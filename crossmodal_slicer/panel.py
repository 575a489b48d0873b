"""Qt-side helpers both panels share: dependencies, the model and device choices, and background jobs.

This is the thin GUI layer (it needs the Slicer application). Everything it calls that touches data
lives in the rest of :mod:`crossmodal_slicer` and the modules' ``Lib`` packages, which are tested outside
the application, on real MRML with Slicer's own Python.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable

import qt
import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from crossmodal_slicer.binding import ParameterNodeBinding
from crossmodal_slicer.outputs import remove_outputs, training_key
from crossmodal_slicer.runs import models_for
from crossmodal_slicer.scene import append_metrics, training_plot

PINNED = {"monai": "monai==1.6.1", "nibabel": "nibabel==5.4.2"}
"""Packages the engine needs beyond what Slicer ships (numpy, scipy, SimpleITK) and PyTorch."""
TORCH_REQUIREMENT = ">=2.6"
"""The oldest PyTorch the engine is meant for (it is tested with the 2.13 of pyproject.toml); the PyTorch
extension picks the newest build matching the GPU driver above it."""


def ensure_dependencies() -> bool:
    """PyTorch through the PyTorch extension when it is installed (it picks the CUDA build), else pip;
    MONAI through pip without its dependencies, so that nothing Slicer ships is replaced. Asks first."""
    missing = [name for name in ("torch", *PINNED) if importlib.util.find_spec(name) is None]
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(f"This module needs {', '.join(missing)}, which will be downloaded and installed now (several "
                                               "hundred MB for PyTorch). Slicer's own packages are not changed.", "Install dependencies?"):
        return False
    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        if "torch" in missing:
            try:
                import PyTorchUtils  # the PyTorch extension

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
            except ImportError:
                slicer.util.pip_install(f"torch{TORCH_REQUIREMENT}")
        for name in PINNED:
            if name in missing:
                slicer.util.pip_install(f"{PINNED[name]} --no-deps")
    finally:
        qt.QApplication.restoreOverrideCursor()
    importlib.invalidate_caches()
    return all(importlib.util.find_spec(name) is not None for name in ("torch", *PINNED))


def python_executable() -> str:
    """Slicer's own Python launcher, so that the child process sees Slicer's packages."""
    found = shutil.which("PythonSlicer", path=os.path.join(slicer.app.slicerHome, "bin")) or shutil.which("PythonSlicer")
    if found is None:
        raise RuntimeError("PythonSlicer was not found beside this Slicer")
    return found


def fill_models(combo: qt.QComboBox, models: list[tuple[str, str]]) -> None:
    """(id, folder) pairs into a combo box; the folder is the item's data."""
    current = combo.currentData
    combo.clear()
    for model_id, folder in models:
        combo.addItem(model_id, folder)
    index = combo.findData(current)
    combo.setCurrentIndex(index if index >= 0 else 0)


def fill_devices(combo: qt.QComboBox) -> None:
    combo.clear()
    combo.addItem("auto (GPU when present)", "auto")
    combo.addItem("CPU", "cpu")
    combo.addItem("GPU (CUDA)", "cuda")


def process_events_until(done: Callable[[], bool], what: str, timeout_s: float = 900.0) -> None:
    """Let the application handle its events (timers, slots, rendering) until ``done()``, as it does while a
    person waits; self-tests wait this way. A clear error naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        slicer.app.processEvents()
        time.sleep(0.05)


class JobMonitor:
    """Polls a :class:`crossmodal.jobs.ChildJob` from a timer: progress bar, log, then ``finished(job)`` once."""

    def __init__(self, job, progress: qt.QProgressBar, log: qt.QPlainTextEdit, on_events: Callable[[list[dict]], None] | None,
                 finished: Callable[[object], None]) -> None:
        self.job, self.progress, self.log, self.on_events, self.finished = job, progress, log, on_events, finished
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.poll)
        self.progress.setRange(0, 0)
        self.timer.start()

    def poll(self) -> None:
        events = self.job.poll()
        for event in events:
            kind = event.get("type")
            if kind == "progress":
                self.progress.setRange(0, max(1, event["total"]))
                self.progress.setValue(event["done"])
                self.progress.setFormat(f"{event['stage']} %v/%m" + (f" (ETA {int(event['eta_s'])} s)" if "eta_s" in event else ""))
            elif kind in ("warning", "error", "log"):
                self.log.appendPlainText(f"{kind}: {event['message']}")
            elif kind == "metrics" and "validation" in event["values"]:
                self.log.appendPlainText(f"step {event['step']}: validation Dice {event['values']['validation']:.3f}")
        if events and self.on_events is not None:
            self.on_events(events)
        if not self.job.running:
            self.job.wait(timeout=5)
            self.timer.stop()
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if self.job.returncode == 0 else 0)
            self.finished(self.job)

    def cancel(self) -> None:
        self.log.appendPlainText("Cancelling ...")
        self.job.cancel()


class SegmentationPanel(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """What both panels share: the .ui and its parameter node, the model and device choices, background
    jobs with progress, log and Cancel, and the training section. A module's widget sets ``logic`` (its
    Lib's ``<Module>Logic``) in ``setupPanel`` and adds its inputs, ``startSegmentation``, ``showResults``
    and ``trainingJob``."""

    MODULE = ""
    ARCHITECTURE = ""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.binding = None
        self.monitor = None
        self.run = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.MODULE}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        fill_devices(self.ui.deviceSelector)
        self.refreshModels()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.trainButton.connect("clicked(bool)", lambda: self.onTrain(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onTrain(resume=True))
        self.setupPanel()
        self.binding = ParameterNodeBinding(self.ui, self.onParameterNodeConnected)
        self.initializeParameterNode()
        self.updateButtons()

    def setupPanel(self) -> None:
        """The module's logic and own connections."""

    def onParameterNodeConnected(self) -> None:
        """After the parameter node is connected to the widgets: restore what the connectors reset."""

    @property
    def _parameterNode(self):
        return self.binding.parameters if self.binding is not None else None

    def cleanup(self) -> None:
        """Slicer is closing (or the module reloading): stop a running child; a training keeps a checkpoint to resume."""
        self.removeObservers()
        self.binding.bind(None)
        if self.busy:
            self.monitor.timer.stop()
            self.monitor.job.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.binding.bind(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.binding.bind(self.logic.getParameterNode())

    def refreshModels(self) -> None:
        fill_models(self.ui.modelSelector, models_for(self.ARCHITECTURE))

    def updateButtons(self, busy: bool = False) -> None:
        for button in (self.ui.segmentButton, self.ui.trainButton, self.ui.resumeButton):
            button.enabled = not busy
        self.ui.cancelButton.enabled = busy

    def status(self, text: str) -> None:
        self.ui.statusLabel.text = text
        self.ui.logText.appendPlainText(text)

    @property
    def busy(self) -> bool:
        """A segmentation or training is running in the background (Cancel stops it)."""
        return self.monitor is not None

    def runInBackground(self, job, progressBar, onEvents, finished) -> None:
        def done(job) -> None:
            self.monitor = None
            self.updateButtons(busy=False)
            finished(job)

        self.monitor = JobMonitor(job, progressBar, self.ui.logText, onEvents, done)
        self.updateButtons(busy=True)

    def startSegmentation(self):
        """Start the module's segmentation child process from the panel's choices; returns the run."""
        raise NotImplementedError

    def showResults(self, run) -> None:
        """Put a finished run's results into the scene and show them."""
        raise NotImplementedError

    def onSegment(self) -> None:
        if not ensure_dependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            self.run = self.startSegmentation()
            self.status(_("Segmenting in the background ..."))
            self.runInBackground(self.run.job, self.ui.progressBar, None, self.onSegmentationFinished)

    def onSegmentationFinished(self, job) -> None:
        """Show a finished run's results, or say why it failed; the run's temporary files go either way."""
        run, self.run = self.run, None
        try:
            failure = job.failure()
            if failure:
                self.status(_("Failed: {failure}").format(failure=failure))
                slicer.util.errorDisplay(failure, windowTitle=self.MODULE)
                return
            with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
                self.showResults(run)
        finally:
            self.logic.discard(run)

    def showWarnings(self, warnings: list[str]) -> None:
        """A result's plausibility warnings (already in the log) where a radiologist cannot miss them: the status line and a message."""
        if warnings:
            self.ui.statusLabel.text += " " + _("Check before use: {count} warning(s), listed in the log.").format(count=len(warnings))
            slicer.util.warningDisplay("\n\n".join(warnings), windowTitle=_("{module}: check before use").format(module=self.MODULE))

    def onCancel(self) -> None:
        if self.busy:
            self.monitor.cancel()

    def trainingJob(self, resume: bool):
        """Start the module's training child process from the panel's choices."""
        raise NotImplementedError

    def onTrain(self, resume: bool) -> None:
        if not ensure_dependencies():
            return
        modelId = self._parameterNode.trainingModelId
        with slicer.util.tryWithErrorDisplay("Could not start the training.", waitCursor=True):
            job = self.trainingJob(resume)
            key = training_key(self.MODULE, modelId)
            remove_outputs(slicer.mrmlScene, key)
            table, chart = training_plot(slicer.mrmlScene, modelId, key)
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            self.runInBackground(job, self.ui.trainingProgressBar, lambda events: append_metrics(table, events), self.onTrainingFinished)
            self.status("Training in the background; Cancel keeps a checkpoint that Resume continues from.")

    def onTrainingFinished(self, job) -> None:
        failure = job.failure()
        if failure:
            self.status(f"Training stopped: {failure}")
            return
        self.refreshModels()
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.findText(self._parameterNode.trainingModelId))
        self.status("Training finished; the model is now in the model list.")
