"""The contract between each module's Python and its Qt Designer .ui file, checked without Qt.

Every widget the code uses exists in the .ui with a fitting class; every SlicerParameterName names a
parameter of the module's parameterNodeWrapper with a widget that can hold its type; the modules use
only Slicer names present in the documented minimum Slicer version.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("MultiModalSeg", "DualStreamSeg")

WIDGETS_FOR_TYPE = {
    # The GUI connectors of slicer.parameterNodeWrapper in Slicer 5.10 (guiConnectors.py): an int cannot
    # go to a ctkSliderWidget, a float in a ctkSliderWidget must be bounded, a str in a QComboBox needs a Choice.
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"ctkSliderWidget", "QDoubleSpinBox", "qMRMLSliderWidget"},
    "str": {"QLineEdit", "QComboBox", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}
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
    "slicer.util.loadUI",
    "slicer.util.pip_install", "slicer.util.setSliceViewerLayers", "slicer.util.tryWithErrorDisplay",
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


PANEL = ROOT / "crossmodal_slicer" / "panel.py"
"""The widget base class both modules share (its ``self.ui`` names must be in both .ui files)."""


def module_source(module: str) -> ast.Module:
    return ast.parse((ROOT / module / f"{module}.py").read_text())


def used_ui_names(tree: ast.Module) -> set[str]:
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}


def parameters_of(tree: ast.Module) -> dict[str, tuple[list[str], set[str]]]:
    """The parameterNodeWrapper class's fields -> (their type names: one, or the members of a Union; their validators' names)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields = {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    annotation, validators = statement.annotation, set()
                    if isinstance(annotation, ast.Subscript) and annotation.value.id == "Annotated":  # Annotated[base, validator(...), ...]
                        annotation, *extra = annotation.slice.elts
                        validators = {v.func.id for v in extra if isinstance(v, ast.Call)}
                    if isinstance(annotation, ast.Subscript) and annotation.value.id == "Union":  # Union[node type, node type]
                        kinds = [member.id for member in annotation.slice.elts]
                    else:
                        kinds = [annotation.id]
                    fields[statement.target.id] = (kinds, validators)
            return fields
    raise AssertionError("no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_uses_exists_in_the_ui(module):
    classes, _, _ = ui_widgets(module)
    missing = (used_ui_names(module_source(module)) | used_ui_names(ast.parse(PANEL.read_text()))) - set(classes)
    assert not missing, f"{module}.py uses widgets the .ui lacks: {sorted(missing)}"


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_has_a_widget_of_a_fitting_class(module):
    classes, connected, node_types = ui_widgets(module)
    fields = parameters_of(module_source(module))
    assert set(connected) == set(fields), f"parameters without widget: {set(fields) - set(connected)}; unknown SlicerParameterName: {set(connected) - set(fields)}"
    for parameter, (kinds, validators) in fields.items():
        widget = connected[parameter]
        if kinds[0].startswith("vtkMRML"):
            assert classes[widget] == "qMRMLNodeComboBox" and node_types[widget] == kinds, parameter
            continue
        (kind,) = kinds
        assert classes[widget] in WIDGETS_FOR_TYPE[kind], f"{parameter}: {kind} in a {classes[widget]}"
        if classes[widget] in ("ctkSliderWidget", "QSlider"):
            assert "WithinRange" in validators, f"{parameter}: a slider needs a bounded value"
        if classes[widget] == "QComboBox":
            assert "Choice" in validators, f"{parameter}: a combo box holds one of a Choice"


@pytest.mark.parametrize("module", MODULES)
def test_the_module_uses_only_slicer_names_of_the_documented_version(module):
    imported = {}
    for node in (*ast.walk(module_source(module)), *ast.walk(ast.parse(PANEL.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slicer":
            imported.setdefault(node.module, set()).update(alias.name for alias in node.names)
    for name, names in imported.items():
        assert names <= SLICER_NAMES.get(name, set()), f"{module} imports {names - SLICER_NAMES.get(name, set())} from {name}"
    compile((ROOT / module / f"{module}.py").read_text(), f"{module}.py", "exec")


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
    used = slicer_chains(module_source(module)) | slicer_chains(ast.parse(PANEL.read_text()))
    unchecked = used - SLICER_ATTRIBUTES - {f"slicer.{name}" for name in SLICER_NAMES["slicer"]}
    assert not unchecked, f"check these against the Slicer 5.10 source, then list them: {sorted(unchecked)}"


@pytest.mark.parametrize(("module", "config"), [("MultiModalSeg", "mmsdnet-mscmrseg"), ("DualStreamSeg", "dualstream-v4-abdomen")])
def test_panel_training_uses_the_bundled_models_recipe(module, config):
    sys.path.insert(0, str(ROOT / module))
    try:
        logic = __import__(f"{module}Lib.logic", fromlist=["TRAINING_RECIPE"])
    finally:
        sys.path.remove(str(ROOT / module))
    bundled = json.loads((ROOT / "configs" / f"{config}.json").read_text())
    for key, value in logic.TRAINING_RECIPE.items():
        assert bundled[key] == value, key


def test_the_modules_load_before_pytorch_is_installed():
    """Slicer imports each module's files at startup, before a panel has had a chance to offer installing
    PyTorch and MONAI: nothing the modules import at load time (their Lib, the catalog) may need them."""
    code = ("import sys; import MultiModalSegLib, DualStreamSegLib; from crossmodal.module_logic import models_for; models_for('MMSDNet'); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')); assert not heavy, heavy[:5]")
    path = os.pathsep.join(str(p) for p in (ROOT, ROOT / "MultiModalSeg", ROOT / "DualStreamSeg"))
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
