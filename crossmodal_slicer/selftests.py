"""What both modules' self-tests do to a panel as a person would: click, wait while Slicer stays live, read
what the panel and the scene then show. Runs only inside Slicer (the panels need the application); the
GitHub workflow runs it in real Slicer releases with a main window."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path

import slicer

from crossmodal_slicer.outputs import own_outputs, training_key
from crossmodal_slicer.panel import SegmentationPanel, process_events_until


def open_panel(module: str) -> SegmentationPanel:
    """The module's panel, entered through the module selector when there is a main window (as a person does)."""
    if slicer.util.mainWindow() is not None:
        slicer.util.selectModule(module)
    widget = slicer.util.getModuleWidget(module)
    if slicer.util.mainWindow() is None:
        widget.enter()
    slicer.app.processEvents()
    return widget


def node_names(scene) -> list[str]:
    """Every node of the scene, by class and name: what a test compares to see that nothing was added or lost."""
    nodes = scene.GetNodes()
    return sorted(f"{node.GetClassName()} {node.GetName()}" for node in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())))


def wait_for_panel(panel: SegmentationPanel, timeout_s: float = 900.0) -> None:
    """Until the panel's background job has ended and its finish handler ran (results shown or failure said)."""
    process_events_until(lambda: not panel.busy, f"the end of {panel.MODULE}'s background job", timeout_s)


def choose_cpu(panel: SegmentationPanel) -> None:
    """The device a CI machine has."""
    panel.ui.deviceSelector.setCurrentIndex(panel.ui.deviceSelector.findData("cpu"))


@contextlib.contextmanager
def scratch_models_folder() -> Iterator[Path]:
    """A temporary user models folder (``CROSSMODAL_MODELS``, which the child processes inherit), so that a
    self-test's trained model neither lands among the user's nor stays after the test."""
    folder = Path(tempfile.mkdtemp(prefix="crossmodal-selftest-models-"))
    previous = os.environ.get("CROSSMODAL_MODELS")
    os.environ["CROSSMODAL_MODELS"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("CROSSMODAL_MODELS", None)
        else:
            os.environ["CROSSMODAL_MODELS"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def segment_and_cancel(test: unittest.TestCase, panel: SegmentationPanel) -> None:
    """Segment, then Cancel at once: the panel says it failed, and the scene gains no output of the module."""
    before = node_names(slicer.mrmlScene)
    panel.ui.segmentButton.click()
    test.assertTrue(panel.busy and panel.ui.cancelButton.enabled and not panel.ui.segmentButton.enabled)
    panel.ui.cancelButton.click()
    wait_for_panel(panel)
    test.assertTrue(panel.ui.statusLabel.text.startswith("Failed:"), panel.ui.statusLabel.text)
    test.assertTrue(panel.ui.segmentButton.enabled and not panel.ui.cancelButton.enabled)
    test.assertEqual(node_names(slicer.mrmlScene), before)


def segment(test: unittest.TestCase, panel: SegmentationPanel, done: str) -> None:
    """Press Segment and wait: the panel is busy meanwhile, then its status starts with ``done``."""
    panel.ui.segmentButton.click()
    test.assertTrue(panel.busy and panel.ui.cancelButton.enabled and not panel.ui.segmentButton.enabled)
    wait_for_panel(panel)
    test.assertTrue(panel.ui.statusLabel.text.startswith(done), panel.ui.statusLabel.text)
    test.assertTrue(panel.ui.segmentButton.enabled and not panel.ui.cancelButton.enabled)


def train_cancel_and_resume(test: unittest.TestCase, panel: SegmentationPanel, models: Path, model_id: str, steps: int) -> None:
    """Train (the training data already chosen), Cancel once the plot shows steps, Resume to the end: a
    checkpoint is kept in between, and the finished model is then chosen in the model list."""
    ui = panel.ui
    ui.trainingModelIdEdit.text = model_id
    ui.trainingStepsSpinBox.value = steps
    test.assertEqual(panel._parameterNode.trainingModelId, model_id)
    ui.trainButton.click()
    test.assertTrue(panel.busy, ui.statusLabel.text)
    (table,) = (node for node in own_outputs(slicer.mrmlScene, training_key(panel.MODULE, model_id)) if node.IsA("vtkMRMLTableNode"))
    process_events_until(lambda: table.GetNumberOfRows() >= 2 or not panel.busy, "two training steps in the plot", 600)
    test.assertTrue(panel.busy, f"the training ended before it could be cancelled: {ui.statusLabel.text}")
    ui.cancelButton.click()
    wait_for_panel(panel)
    test.assertTrue(ui.statusLabel.text.startswith("Training stopped"), ui.statusLabel.text)
    test.assertTrue((models / model_id / "checkpoint.pt").is_file())
    ui.resumeButton.click()
    wait_for_panel(panel)
    test.assertTrue(ui.statusLabel.text.startswith("Training finished"), ui.statusLabel.text)
    test.assertTrue((models / model_id / "card.json").is_file() and not (models / model_id / "checkpoint.pt").exists())
    test.assertEqual(ui.modelSelector.currentText, model_id)
