"""A stand-in for the parts of Qt, CTK and the Slicer application the module file touches, to run its
wiring here (CI has no Slicer and no Qt): widgets are built from ``Resources/UI/UNetSigmoidSeg.ui``,
the scene is a real slicer-core scene, the logic and the worker are the real ones.

Fidelity where it matters for catching wiring bugs:
* each fake widget accepts only the Qt properties its class has (a typo such as ``tooltip`` fails);
* setting a property emits the signal Qt would emit when the value changes (``checked`` → ``toggled(bool)``,
  ``value`` → ``valueChanged(double)``, ``currentPath`` → ``currentPathChanged(QString)``, …), unless
  signals are blocked; programmatic ``QLineEdit.text`` emits nothing (as ``editingFinished``);
* slot exceptions are recorded (PythonQt prints them and goes on) so tests can assert there were none;
* timers only fire when the test calls ``fire()``.
It does not render, lay out, or check signal signatures against C++.
"""

import contextlib
import re
import types
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List

ERRORS: List[str] = []  # exceptions raised by slots
DIALOGS: List[str] = []  # error / confirmation dialogs shown

COMMON = {"enabled", "visible", "toolTip", "name", "objectName", "geometry", "sizePolicy"}
PROPS = {
    "qMRMLWidget": set(),
    "QLabel": {"text", "wordWrap", "textInteractionFlags"},
    "QPushButton": {"text", "checked", "checkable"},
    "QToolButton": {"text", "checked", "checkable"},
    "QCheckBox": {"text", "checked"},
    "QComboBox": {"currentText", "currentIndex"},
    "QSpinBox": {"value", "minimum", "maximum", "singleStep", "suffix"},
    "QDoubleSpinBox": {"value", "minimum", "maximum", "singleStep", "decimals", "suffix"},
    "QLineEdit": {"text", "placeholderText"},
    "QProgressBar": {"value", "minimum", "maximum"},
    "QPlainTextEdit": {"readOnly", "maximumBlockCount", "plainText"},
    "ctkPathLineEdit": {"currentPath", "filters", "nameFilters", "settingKey"},
    "ctkSliderWidget": {"value", "minimum", "maximum", "singleStep", "pageStep", "decimals", "tracking"},
    "ctkCollapsibleButton": {"text", "collapsed"},
    "ctkCollapsibleGroupBox": {"title", "collapsed"},
    "qMRMLNodeComboBox": {
        "nodeTypes",
        "noneEnabled",
        "addEnabled",
        "removeEnabled",
        "renameEnabled",
        "noneDisplay",
        "showChildNodeTypes",
        "currentNodeID",
    },
    "qMRMLTableView": {"editTriggers"},
}
# property → signal Qt emits when the value changes
NOTIFY = {
    "QCheckBox": {"checked": "toggled(bool)"},
    "QSpinBox": {"value": "valueChanged(int)"},
    "QDoubleSpinBox": {"value": "valueChanged(double)"},
}  # ctkSliderWidget, ctkPathLineEdit: their classes below
DEFAULTS = {
    "QCheckBox": {"checked": False, "text": ""},
    "QLabel": {"text": ""},
    "QLineEdit": {"text": ""},
    "QSpinBox": {"value": 0, "minimum": 0, "maximum": 99},
    "QDoubleSpinBox": {"value": 0.0, "minimum": 0.0, "maximum": 99.99},
    "QProgressBar": {"value": 0},
    "ctkPathLineEdit": {"currentPath": ""},
    "ctkSliderWidget": {"value": 0.0, "minimum": 0.0, "maximum": 99.0, "tracking": True},
    "QPushButton": {"text": ""},
}


class FakeObject:
    CLASS = "QObject"

    def __init__(self, cls: str = "", name: str = "", **props: Any) -> None:
        object.__setattr__(self, "_cls", cls or self.CLASS)
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_blocked", False)
        object.__setattr__(self, "_allowed", COMMON | PROPS.get(self._cls, set()))
        object.__setattr__(self, "enabled", True)
        object.__setattr__(self, "visible", True)
        object.__setattr__(self, "toolTip", "")
        object.__setattr__(self, "name", name)
        for key, value in {**DEFAULTS.get(self._cls, {}), **props}.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._allowed and not isinstance(getattr(type(self), key, None), property):
            raise AttributeError(f"{self._cls} has no property '{key}'")
        old = getattr(self, key, None)
        object.__setattr__(self, key, value)
        signal = NOTIFY.get(self._cls, {}).get(key)
        if signal and old != value:
            self.emit(signal, value)

    def connect(self, signal: str, slot: Callable) -> None:
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args: Any) -> None:
        if self._blocked:
            return
        for slot in list(self._slots.get(signal, [])):
            try:
                slot(*args)
            except Exception as exc:  # noqa: BLE001 - PythonQt prints slot exceptions and continues
                import traceback

                ERRORS.append(f"{self.name}.{signal}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    def blockSignals(self, block: bool) -> bool:
        old = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return old

    def setVisible(self, visible: bool) -> None:
        self.visible = bool(visible)

    def hide(self) -> None:
        self.visible = False

    def show(self) -> None:
        self.visible = True


class FormLayout:
    def __init__(self) -> None:
        self.rows: List[Any] = []

    def rowCount(self) -> int:
        return len(self.rows)

    def removeRow(self, row: int) -> None:
        del self.rows[row]

    def addRow(self, label: Any, widget: Any) -> None:
        self.rows.append((label, widget))

    def addWidget(self, widget: Any) -> None:
        self.rows.append((None, widget))


class Widget(FakeObject):
    CLASS = "QWidget"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_layout", FormLayout())
        object.__setattr__(self, "children", [])

    def layout(self) -> FormLayout:
        return self._layout

    def click(self) -> None:
        self.emit("clicked()")

    def setParent(self, parent: Any) -> None:
        pass


class ComboBox(Widget):
    CLASS = "QComboBox"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "items", [])
        object.__setattr__(self, "tips", {})
        object.__setattr__(self, "_index", -1)

    def addItem(self, text: str) -> None:
        self.items.append(text)
        if self._index < 0:
            object.__setattr__(self, "_index", 0)
            self.emit("currentIndexChanged(int)", 0)

    def setItemData(self, index: int, value: Any, role: Any) -> None:
        self.tips[index] = value

    def clear(self) -> None:
        had = self._index >= 0
        self.items.clear()
        self.tips.clear()
        object.__setattr__(self, "_index", -1)
        if had:
            self.emit("currentIndexChanged(int)", -1)

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def currentText(self) -> str:
        return self.items[self._index] if 0 <= self._index < len(self.items) else ""

    @currentText.setter
    def currentText(self, text: str) -> None:  # QComboBox::setCurrentText on a non-editable box: select a matching item
        if text in self.items and self.items.index(text) != self._index:
            object.__setattr__(self, "_index", self.items.index(text))
            self.emit("currentIndexChanged(int)", self._index)


class NodeComboBox(Widget):
    CLASS = "qMRMLNodeComboBox"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_node", None)
        object.__setattr__(self, "scene", None)

    def setMRMLScene(self, scene: Any) -> None:
        object.__setattr__(self, "scene", scene)

    def currentNode(self) -> Any:
        node = self._node
        if node is not None and (self.scene is None or self.scene.GetNodeByID(node.GetID()) is not node):
            object.__setattr__(self, "_node", None)  # removed from the scene
        return self._node

    def setCurrentNode(self, node: Any) -> None:
        if node is not self.currentNode():
            object.__setattr__(self, "_node", node)
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class PathLineEdit(Widget):
    """ctkPathLineEdit: ``currentPathChanged`` only for input its validator accepts — the regular expression CTK builds
    from ``nameFilters`` (ctkUtils.cpp nameFiltersToRegExpPattern: ``*.ext`` → ``.*\\.ext?$``; none → ``.+``)."""

    CLASS = "ctkPathLineEdit"

    def __setattr__(self, key, value):
        if key != "currentPath":
            return super().__setattr__(key, value)
        changed = value != getattr(self, "currentPath", None)
        was_valid = bool(re.fullmatch(self.pattern(), getattr(self, "currentPath", "") or ""))
        object.__setattr__(self, "currentPath", value)
        valid = bool(re.fullmatch(self.pattern(), value or ""))
        if changed and valid:
            self.emit("currentPathChanged(QString)", value)
        if valid != was_valid:
            self.emit("validInputChanged(bool)", valid)

    def pattern(self) -> str:
        parts = []
        for name_filter in getattr(self, "nameFilters", None) or []:
            m = re.match(r"^(.*)\(([^)]*)\)$", name_filter)
            items = m.group(2).split() if m else ([name_filter] if re.match(r"^[\w\s.*_~$\[\]]+$", name_filter) else [])
            parts += [rf".*\.{e.group(1)}?$" for e in (re.search(r"\*\.(\w+)", i) for i in items) if e]
        return "(" + "|".join(parts) + ")" if parts else ".+"

    def addCurrentPathToHistory(self) -> None:
        object.__setattr__(
            self, "history", [self.currentPath] + [p for p in getattr(self, "history", []) if p != self.currentPath]
        )


class PlainTextEdit(Widget):
    CLASS = "QPlainTextEdit"

    def appendPlainText(self, text: str) -> None:
        lines = (getattr(self, "plainText", "") or "").split("\n") if getattr(self, "plainText", "") else []
        lines += str(text).split("\n")
        cap = int(getattr(self, "maximumBlockCount", 0) or 0)
        object.__setattr__(self, "plainText", "\n".join(lines[-cap:] if cap else lines))


class TableView(Widget):
    CLASS = "qMRMLTableView"

    def setMRMLScene(self, scene: Any) -> None:
        object.__setattr__(self, "scene", scene)

    def setMRMLTableNode(self, node: Any) -> None:
        object.__setattr__(self, "tableNode", node)


class TopWidget(Widget):
    CLASS = "qMRMLWidget"

    def setMRMLScene(self, scene: Any) -> None:  # the .ui's mrmlSceneChanged → setMRMLScene connections
        for receiver in self.scene_receivers:
            receiver.setMRMLScene(scene)


class SliderWidget(Widget):
    """ctkSliderWidget: a new value emits valueIsChanging (tracking off) then valueChanged, as setSpinBoxValue does
    when the value is set or typed (a mouse drag emits valueIsChanging only, valueChanged on release)."""

    CLASS = "ctkSliderWidget"

    def __setattr__(self, key, value):
        if key == "value" and value != getattr(self, "value", None) and not getattr(self, "tracking", True):
            object.__setattr__(self, "value", value)
            self.emit("valueIsChanging(double)", value)
            self.emit("valueChanged(double)", value)
            return
        super().__setattr__(key, value)


FACTORY = {
    "QComboBox": ComboBox,
    "qMRMLNodeComboBox": NodeComboBox,
    "ctkPathLineEdit": PathLineEdit,
    "QPlainTextEdit": PlainTextEdit,
    "qMRMLTableView": TableView,
    "qMRMLWidget": TopWidget,
    "ctkSliderWidget": SliderWidget,
}


def _value(prop: ET.Element) -> Any:
    child = list(prop)[0]
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text)
    if child.tag == "double":
        return float(child.text)
    if child.tag == "stringlist":
        return [s.text for s in child]
    return child.text or ""


def load_ui(path: str) -> TopWidget:
    """Fake widgets for every ``<widget>`` of the .ui, with its properties (each a known property of its class)."""
    root = ET.parse(path).getroot()
    widgets: Dict[str, Any] = {}
    for element in root.iter("widget"):
        cls, name = element.get("class"), element.get("name")
        props = {p.get("name"): _value(p) for p in element.findall("property") if p.get("stdset") != "0"}
        props = {k: v for k, v in props.items() if k not in ("geometry", "sizePolicy", "orientation", "sizeHint")}
        widgets[name] = FACTORY.get(cls, Widget)(cls, name, **props)
    top = widgets[root.find("widget").get("name")]
    object.__setattr__(top, "children", [w for n, w in widgets.items() if w is not top])
    receivers = [
        widgets[c.findtext("receiver")]
        for c in root.iter("connection")
        if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    ]
    object.__setattr__(top, "scene_receivers", receivers)
    return top


TIMERS: List["Timer"] = []


class Timer:
    """qt.QTimer: fires only when the test calls ``fire()`` or ``App.processEvents()``."""

    def __init__(self) -> None:
        self.interval, self.singleShot, self.active, self._slots = 0, False, False, []
        TIMERS.append(self)

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def setSingleShot(self, single: bool) -> None:
        self.singleShot = single

    def connect(self, signal: str, slot: Callable) -> None:
        assert signal == "timeout()", signal
        self._slots.append(slot)

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        if self.singleShot:
            self.active = False
        for slot in self._slots:
            try:
                slot()
            except Exception as exc:  # noqa: BLE001
                import traceback

                ERRORS.append(f"timer: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")


SETTINGS: Dict[str, Any] = {}  # what qt.QSettings() holds (Slicer's application settings, per user)


class Settings:
    """qt.QSettings(): one shared store; ``value`` returns None for a key never set."""

    def value(self, key: str, default: Any = None) -> Any:
        return SETTINGS.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        SETTINGS[key] = value


def make_qt() -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.QTimer = Timer
    qt.QSettings = Settings
    qt.QIcon = lambda path: ("icon", path)
    qt.Qt = types.SimpleNamespace(ToolTipRole=3)
    qt.QFileDialog = types.SimpleNamespace(getExistingDirectory=lambda parent, title, start: "")
    return qt


def make_ctk() -> types.ModuleType:
    ctk = types.ModuleType("ctk")
    ctk.ctkSliderWidget = lambda: SliderWidget("ctkSliderWidget", "segmentSlider")
    return ctk


def make_scripted_loadable_module(module_path: str) -> types.ModuleType:
    import unittest

    mod = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = FormLayout()
            self.moduleName = type(self).__name__[: -len("Widget")]

        def setup(self) -> None:
            pass

        def onReload(self) -> None:
            self.reloaded = True

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, requestedDelay: Any = None, msec: Any = None) -> None:
            DIALOGS.append(f"delayDisplay: {message}")

    mod.ScriptedLoadableModule = ScriptedLoadableModule
    mod.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    mod.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return mod


class App:
    """slicer.app: ``processEvents`` fires every active timer once (time passes only there, as in an event loop)."""

    def processEvents(self) -> None:
        for timer in list(TIMERS):
            if timer.active:
                timer.fire()

    def testingEnabled(self) -> bool:
        return True


def make_i18n() -> types.ModuleType:
    mod = types.ModuleType("slicer.i18n")
    mod.tr = lambda text: text
    mod.translate = lambda context, text: text
    return mod


@contextlib.contextmanager
def try_with_error_display(message: Any = None, show: bool = True, waitCursor: bool = False):
    """slicer.util.tryWithErrorDisplay: show the message with the exception text, then re-raise."""
    try:
        yield
    except Exception as exc:
        if show:
            DIALOGS.append(f"{message}\n\n{exc}")
        raise


def error_display(
    text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None, **kwargs: Any
) -> None:
    DIALOGS.append(text)


class PlotsLogic:
    shown: List[Any] = []

    def ShowChartInLayout(self, chart: Any) -> None:
        self.shown.append(chart)
