"""The contract between each module's Python and its Qt Designer .ui file, checked without Qt.

Every widget the code uses exists in the .ui with a fitting class; every SlicerParameterName names a
parameter of the module's parameterNodeWrapper with a widget that can hold its type; the modules use
only Slicer names present in the documented minimum Slicer version.
"""

from __future__ import annotations

import ast
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("MultiModalSeg", "DualStreamSeg")

WIDGETS_FOR_TYPE = {
    # The GUI connectors of slicer.parameterNodeWrapper in Slicer 5.6 (guiConnectors.py): an int cannot
    # go to a ctkSliderWidget, a float in a ctkSliderWidget must be bounded, a str in a QComboBox needs a Choice.
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"ctkSliderWidget", "QDoubleSpinBox", "qMRMLSliderWidget"},
    "str": {"QLineEdit", "QComboBox", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}
SLICER_NAMES = {
    # Slicer 5.6 (the documented minimum) has all of these.
    "slicer": {"vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"},
    "slicer.i18n": {"tr", "translate"},
    "slicer.parameterNodeWrapper": {"parameterNodeWrapper", "WithinRange", "Choice"},
    "slicer.ScriptedLoadableModule": {"ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget"},
    "slicer.util": {"VTKObservationMixin"},
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


def parameters_of(tree: ast.Module) -> dict[str, tuple[str, set[str]]]:
    """The parameterNodeWrapper class's fields -> (their annotation's base type name, its validators' names)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields = {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    annotation, validators = statement.annotation, set()
                    if isinstance(annotation, ast.Subscript):  # Annotated[base, validator(...), ...]
                        annotation, *extra = annotation.slice.elts
                        validators = {v.func.id for v in extra if isinstance(v, ast.Call)}
                    fields[statement.target.id] = (annotation.id, validators)
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
    for parameter, (kind, validators) in fields.items():
        widget = connected[parameter]
        if kind.startswith("vtkMRML"):
            assert classes[widget] == "qMRMLNodeComboBox" and node_types[widget] == [kind], parameter
            continue
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
