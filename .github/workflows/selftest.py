"""Run one module's self-test inside Slicer and exit with its outcome (used by slicer-selftests.yml).

Slicer runs without a main window here, so the module's panel is built through its widget
representation (not selectModule, which needs the main window's module selector).
"""

import sys
import traceback

import slicer

module = sys.argv[-1]
try:
    slicer.util.getModuleWidget(module)  # builds the panel: its .ui, parameter node and connections
    test = getattr(__import__(module), f"{module}Test")()
    test.runTest()
except Exception:  # noqa: BLE001 - any failure fails the job, with its traceback
    traceback.print_exc()
    slicer.util.exit(1)
else:
    slicer.util.exit(0)
