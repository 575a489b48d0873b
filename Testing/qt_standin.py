"""A stand-in for the ``qt`` and ``ctk`` modules that Slicer's own Python imports, for tests without the application.

Slicer's ``parameterNodeWrapper`` chooses a GUI connector by the exact widget class (``type(widget) in
(qt.QSpinBox, ...)``) and then drives the widget through its PythonQt properties and signals. These classes
reproduce exactly that surface with Qt's documented behaviour where it matters (a spin box clamps its
value to its range and signals only real changes; a combo box selects its first item; setting a text or a
path signals). Widgets are built from a module's Qt Designer ``.ui`` file as ``slicer.util.loadUI`` and
``childWidgetVariables`` would build them. Nothing here stands in for MRML, logic or the modules' own code.
"""

from __future__ import annotations

import inspect
import sys
import types
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path


class Signal:
    """A PythonQt bound signal: ``connect``, ``disconnect`` and (for the stand-in) ``emit``."""

    def __init__(self) -> None:
        self.slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self.slots.append(slot)

    def disconnect(self, slot: Callable) -> None:
        if slot not in self.slots:
            raise RuntimeError("disconnect: the slot is not connected")  # PythonQt raises for an unknown slot too
        self.slots.remove(slot)

    def emit(self, *args) -> None:
        """Call each slot with as many of the signal's arguments as it takes, as PythonQt does."""
        for slot in list(self.slots):
            parameters = inspect.signature(slot).parameters.values()
            if not any(p.kind == p.VAR_POSITIONAL for p in parameters):
                args = args[: sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)]
            slot(*args)


class QObject:
    SIGNALS: tuple[str, ...] = ()

    def __init__(self, parent: QObject | None = None) -> None:
        self._parent = parent
        self._children: list[QObject] = []
        self._properties: dict[str, object] = {}
        self.objectName = ""
        for name in self.SIGNALS:
            setattr(self, name, Signal())
        if parent is not None:
            parent._children.append(self)

    def parent(self) -> QObject | None:
        return self._parent

    def property(self, name: str):
        return self._properties.get(name)

    def setProperty(self, name: str, value) -> None:
        self._properties[name] = value

    def findChildren(self, kind: type) -> list:
        found = []
        for child in self._children:
            if isinstance(child, kind):
                found.append(child)
            found.extend(child.findChildren(kind))
        return found


class QWidget(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.toolTip = ""

    def isWidgetType(self) -> bool:
        return True


class _Ranged(QWidget):
    """QSpinBox, QSlider, QDoubleSpinBox, ctkSliderWidget: a value kept within [minimum, maximum]."""

    SIGNALS = ("valueChanged",)
    INTEGER = True

    def __init__(self, parent: QObject | None = None) -> None:
        self._minimum, self._maximum, self._value = 0, 99, 0
        super().__init__(parent)
        self.singleStep = 1
        self.decimals = 0 if self.INTEGER else 2

    def _set(self, value) -> None:
        value = min(max(value, self._minimum), self._maximum)
        value = int(value) if self.INTEGER else float(value)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    value = property(lambda self: self._value, _set)
    minimum = property(lambda self: self._minimum, lambda self, v: self.setRange(v, max(v, self._maximum)))
    maximum = property(lambda self: self._maximum, lambda self, v: self.setRange(min(v, self._minimum), v))

    def setValue(self, value) -> None:
        self._set(value)

    def setMinimum(self, value) -> None:
        self.minimum = value

    def setMaximum(self, value) -> None:
        self.maximum = value

    def setRange(self, minimum, maximum) -> None:
        if not self.INTEGER:
            minimum, maximum = float(minimum), float(maximum)
        self._minimum, self._maximum = minimum, max(minimum, maximum)
        self._set(self._value)


class QSpinBox(_Ranged):
    pass


class QSlider(_Ranged):
    pass


class QDoubleSpinBox(_Ranged):
    INTEGER = False


class ctkSliderWidget(_Ranged):  # noqa: N801 - Qt's names
    INTEGER = False


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "stateChanged")

    def __init__(self, parent: QObject | None = None) -> None:
        self._checked = False
        super().__init__(parent)
        self.checkable = False
        self.text = ""

    def _set(self, checked: bool) -> None:
        checked = bool(checked)
        if checked != self._checked:
            self._checked = checked
            self.toggled.emit(checked)
            self.stateChanged.emit(2 if checked else 0)

    checked = property(lambda self: self._checked, _set)

    def setChecked(self, checked: bool) -> None:
        self.checked = checked


class QCheckBox(QAbstractButton):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.checkable = True


class QPushButton(QAbstractButton):
    pass


class QLineEdit(QWidget):
    SIGNALS = ("textChanged",)

    def __init__(self, parent: QObject | None = None) -> None:
        self._text = ""
        super().__init__(parent)

    def _set(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.textChanged.emit(text)

    text = property(lambda self: self._text, _set)


class ctkPathLineEdit(QWidget):  # noqa: N801
    SIGNALS = ("currentPathChanged",)

    def __init__(self, parent: QObject | None = None) -> None:
        self._path = ""
        super().__init__(parent)
        self.filters = 0

    def _set(self, path: str) -> None:
        if path != self._path:
            self._path = path
            self.currentPathChanged.emit(path)

    currentPath = property(lambda self: self._path, _set)


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged")

    def __init__(self, parent: QObject | None = None) -> None:
        self._items: list[tuple[str, object]] = []
        self._index = -1
        super().__init__(parent)

    def _set(self, index: int) -> None:
        index = index if 0 <= index < len(self._items) else -1
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    currentIndex = property(lambda self: self._index, _set)
    currentText = property(lambda self: self._items[self._index][0] if self._index >= 0 else "")
    currentData = property(lambda self: self._items[self._index][1] if self._index >= 0 else None)
    count = property(lambda self: len(self._items))

    def addItem(self, text: str, data=None) -> None:
        self._items.append((text, data))
        if self._index < 0:
            self._set(0)

    def clear(self) -> None:
        self._items = []
        self._set(-1)

    def setCurrentIndex(self, index: int) -> None:
        self._set(index)

    def findText(self, text: str) -> int:
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def setCurrentText(self, text: str) -> None:
        if self.findText(text) >= 0:
            self._set(self.findText(text))


class qMRMLNodeComboBox(QWidget):  # noqa: N801
    """The node selector: a current node of one of ``nodeTypes`` from its scene (or none)."""

    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged")

    def __init__(self, parent: QObject | None = None) -> None:
        self._node = None
        super().__init__(parent)
        self.nodeTypes: list[str] = []
        self.noneEnabled = False
        self.scene = None

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not None and not any(node.IsA(kind) for kind in self.nodeTypes):
            return  # Qt ignores a node that the combo box does not list
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")


WIDGETS = {cls.__name__: cls for cls in (QWidget, QSpinBox, QSlider, QDoubleSpinBox, ctkSliderWidget, QCheckBox, QPushButton, QLineEdit,
                                         ctkPathLineEdit, QComboBox, qMRMLNodeComboBox)}


class _Module(types.ModuleType):
    """``qt`` or ``ctk``: the classes above, and a distinct placeholder widget class for any other name
    (Slicer's connectors compare ``type(widget)`` with classes such as ``ctk.ctkDoubleSlider``)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        kind = type(name, (QWidget,), {})
        setattr(self, name, kind)
        return kind


def modules() -> dict[str, types.ModuleType]:
    """Fresh ``qt`` and ``ctk`` stand-in modules."""
    qt, ctk = _Module("qt"), _Module("ctk")
    for name, kind in WIDGETS.items():
        setattr(ctk if name.startswith("ctk") else qt, name, kind)
    qt.QObject = QObject
    qt.QColor = type("QColor", (), {})
    return {"qt": qt, "ctk": ctk}


def mrml_widget_classes(source: str) -> dict[str, type]:
    """The ``slicer.qMRML...`` widget classes named in ``source`` (Slicer's Python), as stand-ins."""
    import re

    return {name: WIDGETS.get(name) or type(name, (QWidget,), {}) for name in set(re.findall(r"slicer\.(q[A-Z]\w+)", source))}


def _value(element: ElementTree.Element):
    """A Designer property value: string, number, bool or string list."""
    child = element[0]
    if child.tag in ("string", "cstring"):
        return child.text or ""
    if child.tag == "number":
        return int(child.text)
    if child.tag == "double":
        return float(child.text)
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "stringlist":
        return [s.text for s in child.iter("string")]
    return None


def load_ui(path: Path, classes: dict[str, type]) -> tuple[QWidget, types.SimpleNamespace]:
    """Build a ``.ui`` file's widget tree (``loadUI``) and the name -> widget namespace (``childWidgetVariables``).

    ``classes`` maps Designer class names to stand-ins; dynamic properties (``stdset="0"``, e.g.
    ``SlicerParameterName``) become ``property()`` values, ordinary ones attributes, as in PythonQt.
    """
    root = ElementTree.parse(path).getroot().find("widget")
    widgets: dict[str, QWidget] = {}

    def build(element: ElementTree.Element, parent: QWidget | None) -> None:
        if element.tag == "widget":
            widget = classes.get(element.get("class"), QWidget)(parent)
            widget.objectName = element.get("name")
            widgets[widget.objectName] = widget
            for prop in element.findall("property"):
                value = _value(prop)
                if prop.get("stdset") == "0":
                    widget.setProperty(prop.get("name"), value)
                elif prop.get("name") in ("minimum", "maximum", "value", "checked", "text", "nodeTypes", "noneEnabled", "decimals", "singleStep"):
                    setattr(widget, prop.get("name"), value)
            for item in element.findall("item"):
                if isinstance(widget, QComboBox):
                    widget.addItem(_value(item.find("property")))
            parent = widget
        for child in element:
            if child.tag in ("widget", "layout", "item"):
                build(child, parent)

    build(root, None)
    ui = types.SimpleNamespace(**widgets)
    return widgets[root.get("name")], ui


def install() -> dict[str, types.ModuleType | None]:
    """Put fresh ``qt``/``ctk`` stand-ins into ``sys.modules``; returns what was there before."""
    previous = {name: sys.modules.get(name) for name in ("qt", "ctk")}
    sys.modules.update(modules())
    return previous


__all__ = ["Signal", "QObject", "QWidget", "load_ui", "install", "modules", "mrml_widget_classes"]
