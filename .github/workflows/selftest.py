"""Run one module's self-test inside Slicer and exit with its outcome (used by slicer-selftests.yml)."""

import sys
import traceback

import slicer

module = sys.argv[-1]
try:
    slicer.util.selectModule(module)
    test = getattr(__import__(module), f"{module}Test")()
    test.runTest()
except Exception:  # noqa: BLE001 - any failure fails the job, with its traceback
    traceback.print_exc()
    slicer.util.exit(1)
else:
    slicer.util.exit(0)
