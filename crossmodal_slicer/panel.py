"""Qt-side helpers both panels share: dependencies, the model and device choices, and background jobs.

This is the thin GUI layer (it needs the Slicer application). Everything it calls that touches data
lives in :mod:`crossmodal.module_logic` and the modules' ``Lib`` packages, which are tested outside Slicer.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable

import qt
import slicer

PINNED = {"monai": "monai==1.6.1"}
"""Packages the engine needs beyond what Slicer ships (numpy, SimpleITK) and PyTorch."""


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

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
            except ImportError:
                slicer.util.pip_install("torch")
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
