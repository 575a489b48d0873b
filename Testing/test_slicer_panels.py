"""Both panels' parameters on Slicer's own Python (each supported release) over real MRML nodes.

The parameter node classes are built by the release's own ``parameterNodeWrapper``; ``connectGui`` picks a
connector for each widget of the module's ``.ui`` with the release's own selection code. Only the Qt
widgets are stand-ins (:mod:`qt_standin`).
"""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

import pytest

slicer_core = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")

import qt_standin  # noqa: E402
from slicer_python import RELEASES, ROOT, SLICER_PYTHON, available, slicer_python  # noqa: E402

from crossmodal.errors import InputError  # noqa: E402
from crossmodal_slicer.binding import ParameterNodeBinding  # noqa: E402

MODULES = ("MultiModalSeg", "DualStreamSeg")
DEFAULTS = {
    "MultiModalSeg": {"lgeVolume": None, "cineVolume": None, "cineFrame": 0, "referenceSegmentation": None, "anatomyChannel": 1,
                      "showAlignedCine": True, "trainingData": Path("."), "trainingModelId": "my-mmsdnet", "lgeMaskPercent": 100.0,
                      "trainingSteps": 1500},
    "DualStreamSeg": {"inputVolume": None, "modality": "auto", "mirror": False, "trainingCT": Path("."), "trainingMR": Path("."),
                      "trainingModelId": "my-dualstream", "variant": "V4", "trainingSteps": 3000},
}


@pytest.fixture(scope="module", params=RELEASES)
def slicer(request):
    """``slicer`` with the release's own Python on top, and both modules' folders importable."""
    if available(request.param) is None:
        pytest.skip(f"Slicer {request.param}'s Python is absent ({SLICER_PYTHON}, beside the project in ../shared)")
    sys.path[:0] = [str(ROOT / m) for m in MODULES]
    with slicer_python(request.param) as slicer:
        yield slicer
    del sys.path[: len(MODULES)]


@pytest.fixture(autouse=True)
def fresh_scene(slicer):
    """Each test in a new application scene (the parameter nodes are per-scene singletons)."""
    slicer.mrmlScene = slicer.vtkMRMLScene()


def library(module: str):
    return importlib.import_module(f"{module}Lib")


def logic_of(module: str):
    return getattr(library(module), f"{module}Logic")()


def panel(module: str):
    """The module's ``.ui`` as ``loadUI`` + ``childWidgetVariables`` give it, with the release's widget classes."""
    qt, ctk, slicer = (sys.modules[name] for name in ("qt", "ctk", "slicer"))
    classes = {name: getattr(slicer if name.startswith("qMRML") else ctk if name.startswith("ctk") else qt, name) for name in qt_standin.WIDGETS}
    return qt_standin.load_ui(ROOT / module / "Resources" / "UI" / f"{module}.ui", classes)[1]


@pytest.mark.parametrize("module", MODULES)
def test_each_parameter_node_is_built_by_slicers_wrapper_with_its_defaults(slicer, module):
    """On the code before this test, MultiModalSeg's Union parameters (no None) made the wrapper raise
    "Unable to write value 'None'": the panel could not open."""
    parameters = logic_of(module).getParameterNode()
    assert {name: getattr(parameters, name) for name in DEFAULTS[module]} == DEFAULTS[module]
    assert set(parameters.allParameters) == set(DEFAULTS[module])
    node = parameters.parameterNode
    assert node.GetSingletonTag() == module and node.GetAttribute("ModuleName") == module  # what a scripting user looks for
    assert logic_of(module).getParameterNode().parameterNode is node  # one per scene


def multimodalseg_values(slicer, tmp_path: Path) -> dict:
    scene = slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine sequence")
    for frame in range(4):
        sequence.SetDataNodeAtValue(slicer.vtkMRMLScalarVolumeNode(), str(frame))
    return {"lgeVolume": scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "LGE"), "cineVolume": sequence, "cineFrame": 3,
            "referenceSegmentation": scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "reference labels"), "anatomyChannel": 8,
            "showAlignedCine": False, "trainingData": tmp_path / "MS-CMRSeg", "trainingModelId": "site-model", "lgeMaskPercent": 12.5,
            "trainingSteps": 40}


def test_every_multimodalseg_parameter_round_trips_through_the_node_and_a_saved_scene(slicer, tmp_path):
    values = multimodalseg_values(slicer, tmp_path)
    parameters = logic_of("MultiModalSeg").getParameterNode()
    for name, value in values.items():
        setattr(parameters, name, value)
    fresh = library("MultiModalSeg").MultiModalSegParameterNode(parameters.parameterNode)  # read from MRML, not a cache
    assert {name: getattr(fresh, name) for name in values} == values
    for name, other in (("cineVolume", values["lgeVolume"]), ("referenceSegmentation", slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode"))):
        setattr(parameters, name, other)  # the other member of each Union
        assert getattr(fresh, name) is other
        setattr(parameters, name, values[name])
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    for name, wrong in (("anatomyChannel", 9), ("cineFrame", -1), ("lgeMaskPercent", 100.5), ("cineVolume", segmentation)):
        with pytest.raises((ValueError, TypeError)):
            setattr(parameters, name, wrong)

    path = tmp_path / "scene.mrml"
    slicer.mrmlScene.SetURL(str(path))
    assert slicer.mrmlScene.Commit()
    reloaded = slicer_core.vtkMRMLScene()
    reloaded.SetURL(str(path))
    assert reloaded.Connect()
    node = reloaded.GetSingletonNode("MultiModalSeg", "vtkMRMLScriptedModuleNode")
    again = library("MultiModalSeg").MultiModalSegParameterNode(node)
    for name, value in values.items():
        found = getattr(again, name)
        if hasattr(value, "GetID"):
            assert found.GetScene() is reloaded and (found.GetName(), found.GetClassName()) == (value.GetName(), value.GetClassName()), name
        else:
            assert found == value, name


@pytest.mark.parametrize("module", MODULES)
def test_connect_gui_gives_every_parameter_a_widget_of_the_ui_and_values_flow_both_ways(slicer, module, tmp_path):
    parameters, ui = logic_of(module).getParameterNode(), panel(module)
    named = {w.property("SlicerParameterName"): w for w in vars(ui).values() if w.property("SlicerParameterName")}
    assert set(named) == set(parameters.allParameters)
    tag = parameters.connectGui(ui)  # Slicer's own connector choice: raises for a widget that cannot hold its parameter
    assert set(parameters._parameterGUIs[tag]) == set(parameters.allParameters)

    steps = named["trainingSteps"]
    parameters.trainingSteps = 777
    assert steps.value == 777
    steps.value = 55
    assert parameters.trainingSteps == 55
    steps.value = 10**7  # the connector bounded the spin box with the parameter's WithinRange
    assert parameters.trainingSteps == 200000
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    selector = named["lgeVolume" if module == "MultiModalSeg" else "inputVolume"]
    selector.setCurrentNode(volume)
    assert getattr(parameters, "lgeVolume" if module == "MultiModalSeg" else "inputVolume") is volume
    named["trainingModelId"].text = "from the panel"
    assert parameters.trainingModelId == "from the panel"
    path = named["trainingData" if module == "MultiModalSeg" else "trainingCT"]
    path.currentPath = str(tmp_path)
    assert getattr(parameters, "trainingData" if module == "MultiModalSeg" else "trainingCT") == tmp_path
    if module == "MultiModalSeg":
        parameters.referenceSegmentation = labels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert named["referenceSegmentation"].currentNode() is labels
        parameters.showAlignedCine = False
        assert named["showAlignedCine"].checked is False
        named["lgeMaskPercent"].value = 25.0
        assert parameters.lgeMaskPercent == 25.0
    else:
        named["modality"].setCurrentText("CT")
        assert parameters.modality == "CT"
        named["mirror"].checked = True
        assert parameters.mirror is True
        parameters.variant = "Individual"
        assert named["variant"].currentText == "Individual"
    parameters.disconnectGui(tag)


def live_wrappers(kind) -> int:
    """Wrappers still referenced (no gc.collect(): collecting cycles through VTK observers crashes 5.10's leftovers)."""
    return sum(type(o) is kind for o in gc.get_objects())


def test_the_cine_frame_limit_and_one_wrapper_survive_entering_the_panel_again_and_again(slicer):
    """Slicer's int connector resets the frame spin box to 0..999 whenever it connects, and 5.10's
    disconnectGui keeps each wrapper alive: the panel binds one wrapper per parameter node and then
    restores the sequence's frame limit (as MultiModalSegWidget.onParameterNodeConnected does)."""
    logic, ui = logic_of("MultiModalSeg"), panel("MultiModalSeg")
    last_frame = importlib.import_module("MultiModalSegLib.logic").last_frame
    kind = library("MultiModalSeg").MultiModalSegParameterNode
    sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for frame in range(3):
        sequence.SetDataNodeAtValue(slicer.vtkMRMLScalarVolumeNode(), str(frame))
    logic.getParameterNode().cineVolume = sequence
    before = live_wrappers(kind)  # earlier tests' wrappers that 5.10 keeps alive
    binding = ParameterNodeBinding(ui)
    binding.connected = lambda: setattr(ui.cineFrameSpinBox, "maximum", last_frame(binding.parameters.cineVolume))
    for _ in range(5):  # enter(), exit(), enter() ...
        binding.bind(logic.getParameterNode())
        assert ui.cineFrameSpinBox.maximum == 2
    assert live_wrappers(kind) == before + 1
    ui.cineFrameSpinBox.value = 5
    assert binding.parameters.cineFrame == 2

    other = logic.getParameterNode()
    other.connectGui(ui)  # what the panel no longer does on each enter(): Slicer's connector resets the range
    assert ui.cineFrameSpinBox.maximum == 999
    binding.bind(None)
    assert binding.parameters is None


def test_a_training_folder_never_chosen_is_refused_not_slicers_working_folder(slicer):
    """A path parameter holds Path(".") until a folder is chosen; training must not scan the working folder."""
    cardiac, abdominal = logic_of("MultiModalSeg"), logic_of("DualStreamSeg")
    with pytest.raises(InputError, match="choose an MS-CMRSeg folder"):
        cardiac.train(cardiac.getParameterNode().trainingData, model_id="x")
    parameters = abdominal.getParameterNode()
    with pytest.raises(InputError, match="choose a CT folder, an MR folder or both"):
        abdominal.train(ct=parameters.trainingCT, mr=parameters.trainingMR, model_id="x")
