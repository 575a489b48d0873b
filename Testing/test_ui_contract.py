"""The contract between each module's Python and its Qt Designer .ui file, and the Slicer names it uses.

Every widget the code uses exists in the .ui; the modules use only Slicer names present in the documented
minimum Slicer version; the modules load before PyTorch is installed. (Whether each parameter gets a GUI
connector is checked with Slicer's own connector code in test_slicer_panels.py.)
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from slicer_python import RELEASES, SLICER_PYTHON, available

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("MultiModalSeg", "DualStreamSeg")

SLICER_NAMES = {
    # Slicer 5.10 (the documented minimum: the first with Python 3.12, which the engine and PyTorch need) has all of
    # these; each was looked up in the v5.10.0 source. A name missing here fails the test until it has been checked.
    "slicer": {"vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLSequenceNode"},
    "slicer.i18n": {"tr", "translate"},
    "slicer.parameterNodeWrapper": {"parameterNodeWrapper", "WithinRange", "Choice"},
    "slicer.ScriptedLoadableModule": {"ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget"},
    "slicer.util": {"VTKObservationMixin"},
}
SLICER_ATTRIBUTES = {
    # slicer.<...> chains the GUI code uses (the MRML calls of the logic run on real MRML in test_module_logic).
    "slicer.app.applicationLogic", "slicer.app.layoutManager", "slicer.app.processEvents", "slicer.app.slicerHome",
    "slicer.dicomDatabase", "slicer.dicomDatabase.fileForInstance", "slicer.dicomDatabase.fileValue",
    "slicer.modules.plots.logic", "slicer.modules.sequences.logic",
    "slicer.mrmlScene", "slicer.mrmlScene.AddNewNodeByClass", "slicer.mrmlScene.Clear", "slicer.mrmlScene.EndCloseEvent", "slicer.mrmlScene.StartCloseEvent",
    "slicer.util.childWidgetVariables", "slicer.util.confirmOkCancelDisplay", "slicer.util.errorDisplay", "slicer.util.getModuleWidget",
    "slicer.util.loadUI", "slicer.util.mainWindow", "slicer.util.selectModule",
    "slicer.util.pip_install", "slicer.util.setSliceViewerLayers", "slicer.util.tryWithErrorDisplay", "slicer.util.warningDisplay",
    "slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView", "slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView",
    "slicer.vtkMRMLSliceNode.CenteredJumpSlice", "slicer.vtkMRMLSliceNode.JumpAllSlices",
}


def ui_widgets(module: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """name -> class, parameter -> widget name, and node combo box name -> node types."""
    tree = ElementTree.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    classes, parameters, node_types = {}, {}, {}
    for widget in tree.iter("widget"):
        name = widget.get("name")
        classes[name] = widget.get("class")
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameters[prop.find("string").text] = name
            if prop.get("name") == "nodeTypes":
                node_types[name] = [s.text for s in prop.iter("string")]
    return classes, parameters, node_types


SHARED_GUI = (ROOT / "crossmodal_slicer" / "panel.py", ROOT / "crossmodal_slicer" / "selftests.py")
"""The widget base class both modules share and their self-tests' steps (their ``ui`` names must be in both .ui files)."""


def shared_gui_source() -> ast.Module:
    return ast.Module(body=[statement for path in SHARED_GUI for statement in ast.parse(path.read_text()).body], type_ignores=[])


def module_source(module: str) -> ast.Module:
    """The module file and its Lib, as one tree."""
    files = [ROOT / module / f"{module}.py", *sorted((ROOT / module / f"{module}Lib").glob("*.py"))]
    return ast.Module(body=[statement for path in files for statement in ast.parse(path.read_text()).body], type_ignores=[])


def used_ui_names(tree: ast.Module) -> set[str]:
    """``<x>.ui.<name>`` and ``ui.<name>`` (a local ``ui = widget.ui``)."""
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and ((isinstance(node.value, ast.Attribute) and node.value.attr == "ui") or (isinstance(node.value, ast.Name) and node.value.id == "ui"))}


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_uses_exists_in_the_ui(module):
    classes, _, _ = ui_widgets(module)
    missing = (used_ui_names(module_source(module)) | used_ui_names(shared_gui_source())) - set(classes)
    assert not missing, f"{module}.py uses widgets the .ui lacks: {sorted(missing)}"


@pytest.mark.parametrize("module", MODULES)
def test_the_module_uses_only_slicer_names_of_the_documented_version(module):
    imported = {}
    for node in (*ast.walk(module_source(module)), *ast.walk(shared_gui_source())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slicer":
            imported.setdefault(node.module, set()).update(alias.name for alias in node.names)
    for name, names in imported.items():
        assert names <= SLICER_NAMES.get(name, set()), f"{module} imports {names - SLICER_NAMES.get(name, set())} from {name}"


def slicer_chains(tree: ast.AST) -> set[str]:
    """Every ``slicer.a.b...`` attribute chain in ``tree``, at its longest (up to a call or a subscript)."""
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "slicer":
                chains.add(".".join(["slicer", *reversed(parts)]))
    return {c for c in chains if not any(other.startswith(c + ".") for other in chains)}


@pytest.mark.parametrize("module", MODULES)
def test_the_gui_code_uses_only_slicer_attributes_checked_against_the_documented_version(module):
    used = slicer_chains(module_source(module)) | slicer_chains(shared_gui_source())
    unchecked = used - SLICER_ATTRIBUTES - {f"slicer.{name}" for name in SLICER_NAMES["slicer"]}
    assert not unchecked, f"check these against the Slicer 5.10 source, then list them: {sorted(unchecked)}"


def test_the_modules_load_before_pytorch_is_installed():
    """Slicer imports each module's files at startup, before a panel has had a chance to offer installing
    PyTorch and MONAI: nothing the modules import at load time (module files, Libs, the catalog) may need them."""
    if available(RELEASES[-1]) is None:
        pytest.skip(f"Slicer's own Python ({SLICER_PYTHON}) is absent")
    code = ("import sys; from slicer_python import modules_on_newest_release; modules_on_newest_release(); import MultiModalSeg, DualStreamSeg; "
            "from crossmodal_slicer.runs import models_for; models_for('MMSDNet'); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')); assert not heavy, heavy[:5]")
    path = os.pathsep.join(str(p) for p in (ROOT, ROOT / "Testing", ROOT / "MultiModalSeg", ROOT / "DualStreamSeg"))
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("module", MODULES)
def test_the_extension_package_holds_every_file_the_module_imports_and_loads(module):
    """A packaged extension installs only what the module's CMakeLists.txt lists (the source-tree self-tests
    cannot see a file left out): every Python file of the module and its Lib, and its .ui and icon."""
    cmake = (ROOT / module / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)

    def listed(variable: str) -> set[str]:
        block = re.search(rf"set\({variable}\s+(.*?)\)", cmake, re.S)
        assert block, f"{module}/CMakeLists.txt sets no {variable}"
        return set(block.group(1).split())

    scripts = {str(path.relative_to(ROOT / module)) for path in [ROOT / module / f"{module}.py", *(ROOT / module / f"{module}Lib").glob("*.py")]}
    assert listed("MODULE_PYTHON_SCRIPTS") == scripts
    resources = listed("MODULE_PYTHON_RESOURCES")
    assert {f"Resources/UI/{module}.ui", f"Resources/Icons/{module}.png"} <= resources
    assert all((ROOT / module / resource).is_file() for resource in resources), resources
