"""Slicer's own Python layer (``../shared/slicer-python/<release>``) on top of the PyPI Slicer core libraries.

The ``slicer`` package of ``slicer-core`` gives the real MRML scene and module logics; a Slicer release adds
its own Python on top (``slicer.util``, ``slicer.i18n``, ``slicer.parameterNodeWrapper``,
``slicer.ScriptedLoadableModule``). :func:`slicer_python` puts a release's folder first on ``slicer.__path__``
so that those modules are that release's own files, unmodified, as the application would import them.
Qt does not run here: ``qt`` and ``ctk`` (which that Python imports) and the ``slicer.qMRML*`` widget
classes are the stand-ins of :mod:`qt_standin`; ``slicer.mrmlScene`` is a real ``vtkMRMLScene``, as the
application sets it. On leaving, everything imported on top is dropped, so that two releases never mix.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import qt_standin

ROOT = Path(__file__).resolve().parents[1]
SLICER_PYTHON = Path(os.environ.get("CROSSMODAL_SLICER_PYTHON", ROOT.parent / "shared" / "slicer-python"))
"""Slicer's Python at each supported release: ../shared/slicer-python beside the project, or this variable's folder."""
RELEASES = ("5.10.0", "5.12.3")
"""The oldest and the newest Slicer release the extension supports (README)."""
APP_LAYER = ("slicer.util", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule")
"""What a release's Python replaces or adds in the ``slicer`` package."""
DEPENDENTS = ("qt", "ctk", "MultiModalSeg", "DualStreamSeg", "crossmodal_slicer.panel")
"""Modules that import the application layer, so are imported anew for each release."""


def available(release: str) -> Path | None:
    folder = SLICER_PYTHON / release / "slicer"
    return folder if (folder / "parameterNodeWrapper").is_dir() else None


def _layered(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") or name.startswith(p + "Lib") for p in (*APP_LAYER, *DEPENDENTS))


@contextmanager
def slicer_python(release: str) -> Iterator[object]:
    """Import ``slicer`` with ``release``'s own Python on top; yields the ``slicer`` module."""
    folder = available(release)
    if folder is None:
        raise FileNotFoundError(f"Slicer {release}'s Python is not in {SLICER_PYTHON}")
    import slicer

    saved_modules = {name: module for name, module in sys.modules.items() if _layered(name)}
    saved_path = list(slicer.__path__)
    stand_ins = qt_standin.mrml_widget_classes("".join(p.read_text() for p in (folder / "parameterNodeWrapper").glob("*.py")))
    names = {*(n.split(".")[1] for n in APP_LAYER), *stand_ins, "mrmlScene"}
    saved_attributes = {name: slicer.__dict__[name] for name in names if name in slicer.__dict__}
    for name in saved_modules:
        del sys.modules[name]
    sys.modules.update(qt_standin.modules())
    slicer.__path__.insert(0, str(folder))
    for name, kind in stand_ins.items():
        setattr(slicer, name, kind)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    try:
        for name in APP_LAYER:
            importlib.import_module(name)
        yield slicer
    finally:
        for name in [n for n in sys.modules if _layered(n)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        slicer.__path__[:] = saved_path
        for name in names:
            slicer.__dict__.pop(name, None)
        slicer.__dict__.update(saved_attributes)


_kept = ExitStack()


def modules_on_newest_release() -> tuple[object, object]:
    """``MultiModalSegLib`` and ``DualStreamSegLib`` imported on the newest release's Python, which stays in
    place for the rest of the test process (a later :func:`slicer_python` nests inside it). A test module
    calls this at import; without ../shared/slicer-python the module is skipped with the reason."""
    release = RELEASES[-1]
    if available(release) is None:
        pytest.skip(f"Slicer's own Python ({SLICER_PYTHON / release}) is absent: the modules' logic subclasses its "
                    "ScriptedLoadableModuleLogic", allow_module_level=True)
    if "MultiModalSegLib" not in sys.modules:
        _kept.enter_context(slicer_python(release))
        for folder in ("MultiModalSeg", "DualStreamSeg"):
            if str(ROOT / folder) not in sys.path:
                sys.path.insert(0, str(ROOT / folder))
    return importlib.import_module("MultiModalSegLib"), importlib.import_module("DualStreamSegLib")
