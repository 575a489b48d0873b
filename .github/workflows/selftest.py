"""Run one module's self-test inside Slicer and exit with its outcome (used by slicer-selftests.yml).

Usage: Slicer --testing --python-script selftest.py <module>

Why this script and not just ``<module>Test().runTest()``:

- A Python exception raised inside a Qt slot (a button handler, a parameter-node observer) does not
  propagate to the caller: PythonQt prints it and carries on, so a broken panel could still "pass".
  PythonQt prints it with ``PyErr_Print``, which calls ``sys.excepthook``; a wrapper installed here
  records every such exception and the job fails if any was seen, even when runTest passed.
  (Exceptions that the test itself raises are caught below and do not go through the hook. An error
  that some code catches and only logs is not seen; that is the code's choice, not a crash.)
- Slicer runs with a main window (under xvfb-run), so the panel is opened as a user would, with
  ``selectModule``; the layout manager and slice views the tests use exist.
- Exit status: 0 only when the test passed and no uncaught exception was seen; 1 otherwise, also when
  this script itself fails (the ``finally`` always calls ``slicer.util.exit``).

If ``CROSSMODAL_SELFTEST_OUTPUT`` names a folder, a screenshot of the main window is written there at
the end (the workflow uploads that folder as an artifact, with the Slicer log).
"""

import os
import sys
import traceback

import slicer

module = sys.argv[-1]
uncaught = []  # formatted tracebacks of every exception that reached sys.excepthook
_previous_excepthook = sys.excepthook


def _record_uncaught(exc_type, exc, tb):
    uncaught.append("".join(traceback.format_exception(exc_type, exc, tb)))
    _previous_excepthook(exc_type, exc, tb)  # still printed where it happened


sys.excepthook = _record_uncaught

status = 1  # anything that stops before the end fails the job
try:
    select = getattr(slicer.util, "selectModule", None)
    if select is not None and slicer.util.mainWindow() is not None:
        select(module)  # the module selector builds the panel: its .ui, parameter node and connections
    else:
        slicer.util.getModuleWidget(module)
    slicer.app.processEvents()  # let the panel's queued slots run (and fail) now
    test = getattr(__import__(module), f"{module}Test")()
    test.runTest()
    slicer.app.processEvents()  # slots queued by the last steps of the test
    status = 0
except Exception:  # noqa: BLE001 - any failure fails the job, with its traceback
    traceback.print_exc()
finally:
    output = os.environ.get("CROSSMODAL_SELFTEST_OUTPUT")
    if output and slicer.util.mainWindow() is not None:
        try:  # evidence only: a failed screenshot does not change the outcome
            os.makedirs(output, exist_ok=True)
            slicer.util.mainWindow().grab().save(os.path.join(output, f"{module}.png"))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    if uncaught:
        print(f"{module}: {len(uncaught)} uncaught exception(s) in Qt slots or callbacks:", file=sys.stderr)
        for text in uncaught:
            print(text, file=sys.stderr)
        status = 1
    print(f"{module} self-test: {'passed' if status == 0 else 'FAILED'}", file=sys.stderr)
    slicer.util.exit(status)
