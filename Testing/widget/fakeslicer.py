"""A stand-in for the parts of Qt, CTK and the Slicer application the module file touches, to run its
wiring here (CI has no Slicer and no Qt): widgets are built from ``Resources/UI/UNetSigmoidSeg.ui``,
the scene is a real slicer-core scene, the logic and the worker are the real ones.

Fidelity where it matters for catching wiring bugs:
* every property, signal and slot is checked against ``qt_api/qt_api.json``, the API of the real Qt / CTK / qMRML
  classes parsed from their headers (``qt_api/generate.py``): setting a property the class lacks or that is read-only,
  connecting or emitting a signal it does not declare (PythonQt refuses those too), and — from the module's own code —
  reading or calling anything that is not a Q_PROPERTY, signal, slot, ``Q_INVOKABLE`` or (for Qt's own classes) a
  public method, all raise ``AttributeError``; tests may still use the fakes' helpers (``emit``, ``fire``, ``items`` …);
* setting a property emits the signal Qt would emit when the value changes (``checked`` → ``toggled(bool)``,
  ``value`` → ``valueChanged(double)``, ``currentPath`` → ``currentPathChanged(QString)``, …), unless
  signals are blocked; programmatic ``QLineEdit.text`` emits nothing (as ``editingFinished``);
* slot exceptions are recorded (PythonQt prints them and goes on) so tests can assert there were none;
* timers only fire when the test calls ``fire()``.
It does not render or lay out.
"""

import contextlib
import functools
import json
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ERRORS: List[str] = []  # exceptions raised by slots
DIALOGS: List[str] = []  # error / confirmation dialogs shown
CURSORS: List[Any] = []  # the application's override cursors (a stack, as QApplication keeps them)

QT_API_FILE = Path(__file__).resolve().parent / "qt_api" / "qt_api.json"
QT_API: Dict[str, Any] = json.loads(QT_API_FILE.read_text(encoding="utf-8"))
PYTHONQT = {"connect", "disconnect"}  # what PythonQt adds to every QObject


def qt_chain(cls: str) -> List[Dict[str, Any]]:
    """The table entries of ``cls`` and its bases; a class the table lacks is an error (add it to generate.py)."""
    if cls not in QT_API:
        raise AttributeError(f"{cls} is not in {QT_API_FILE.name}: add it to START in qt_api/generate.py")
    chain = []
    while cls in QT_API:
        chain.append(QT_API[cls])
        cls = QT_API[cls]["base"]
    return chain


def normalise_signature(signature: str) -> str:
    """``"valueChanged( const QString & )"`` → ``"valueChanged(QString)"``, as moc and PythonQt compare them."""
    name, _, params = signature.strip().partition("(")
    types_ = []
    for param in params.rstrip(") ").split(","):
        param = re.sub(r"^const\s+(.*?)\s*&$", r"\1", param.strip())
        if param:
            types_.append(re.sub(r"\s+(?=[*&])", "", param))
    return f"{name.strip()}({','.join(types_)})"


@functools.cache
def qt_property(cls: str, name: str) -> Optional[Dict[str, Any]]:
    """``{"writable", "notify"}`` of the Q_PROPERTY ``name`` of ``cls`` or a base, else None."""
    return next((e["property_info"][name] for e in qt_chain(cls) if name in e["property_info"]), None)


@functools.cache
def qt_signal(cls: str, signature: str) -> bool:
    signature = normalise_signature(signature)
    return any(signature in e["signals"] for e in qt_chain(cls))


@functools.cache
def qt_member(cls: str, name: str) -> bool:
    """Whether PythonQt gives ``name`` on a ``cls``: a Q_PROPERTY, signal, slot or Q_INVOKABLE of the class or a base,
    or a public method of one of Qt's own classes (PythonQt's wrappers); not a plain method of a CTK/qMRML class."""
    for entry in qt_chain(cls):
        kinds = ("signals", "slots", "invokables") + (("methods",) if entry["source"] == "qt" else ())
        if name in entry["property_info"] or any(m.split("(")[0] == name for k in kinds for m in entry[k]):
            return True
    return False


def _from_the_module(depth: int = 2) -> bool:
    """Whether the code ``depth`` frames up is the module's own (not a test or this file)."""
    name = sys._getframe(depth).f_globals.get("__name__", "")
    return name == "UNetSigmoidSeg" or name.startswith("UNetSigmoidSegLib")


# property → signal Qt emits when the value changes (test_qt_api.py checks each is the property's NOTIFY signal)
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
    """A QObject of class ``cls`` named ``name`` (its ``objectName``), with the given property values."""

    CLASS = "QObject"

    def __init__(self, cls: str = "", name: str = "", **props: Any) -> None:
        object.__setattr__(self, "_cls", cls or self.CLASS)
        qt_chain(self._cls)
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_blocked", False)
        object.__setattr__(self, "objectName", name)
        if qt_property(self._cls, "enabled") is not None:
            for key, value in (("enabled", True), ("visible", True), ("toolTip", "")):
                object.__setattr__(self, key, value)
        for key, value in {**DEFAULTS.get(self._cls, {}), **props}.items():
            self._check_write(key)
            object.__setattr__(self, key, value)

    def __getattribute__(self, key: str) -> Any:
        if key[0] != "_" and key not in PYTHONQT and _from_the_module():
            cls = object.__getattribute__(self, "_cls")
            if not qt_member(cls, key):
                raise AttributeError(f"{cls} has no Qt property, signal or slot '{key}' ({QT_API_FILE.name})")
        return object.__getattribute__(self, key)

    def _check_write(self, key: str) -> None:
        info = qt_property(self._cls, key)
        if info is None:
            raise AttributeError(f"{self._cls} has no property '{key}' ({QT_API_FILE.name})")
        if not info["writable"]:
            raise AttributeError(f"{self._cls}.{key} is a read-only property ({QT_API_FILE.name})")

    def __setattr__(self, key: str, value: Any) -> None:
        self._check_write(key)
        old = getattr(self, key, None)
        object.__setattr__(self, key, value)
        signal = NOTIFY.get(self._cls, {}).get(key)
        if signal and old != value:
            self.emit(signal, value)

    def _check_signal(self, signal: str) -> None:
        if not qt_signal(self._cls, signal):
            raise AttributeError(f"{self._cls} has no signal '{signal}' ({QT_API_FILE.name})")

    def connect(self, signal: str, slot: Callable) -> None:
        self._check_signal(signal)
        self._slots.setdefault(normalise_signature(signal), []).append(slot)

    def emit(self, signal: str, *args: Any) -> None:
        """Test helper: emit ``signal`` (checked like ``connect``) to the connected slots."""
        self._check_signal(signal)
        if self._blocked:
            return
        for slot in list(self._slots.get(normalise_signature(signal), [])):
            try:
                slot(*args)
            except Exception as exc:  # noqa: BLE001 - PythonQt prints slot exceptions and continues
                import traceback

                ERRORS.append(f"{self.objectName}.{signal}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

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


class FormLayout(FakeObject):
    """A QFormLayout (or, with ``cls``, another layout): ``rows`` holds what was added."""

    CLASS = "QFormLayout"

    def __init__(self, cls: str = "", name: str = "") -> None:
        super().__init__(cls, name)
        object.__setattr__(self, "rows", [])

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
        self._check_write(key)
        changed = value != getattr(self, "currentPath", None)
        was_valid = bool(re.fullmatch(self._pattern(), getattr(self, "currentPath", "") or ""))
        object.__setattr__(self, "currentPath", value)
        valid = bool(re.fullmatch(self._pattern(), value or ""))
        if changed and valid:
            self.emit("currentPathChanged(QString)", value)
        if valid != was_valid:
            self.emit("validInputChanged(bool)", valid)

    def _pattern(self) -> str:
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
            self._check_write(key)
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
    """Fake widgets for every ``<widget>`` of the .ui, with its properties (each a writable property of its class),
    and the .ui's signal → slot connections (each checked)."""
    root = ET.parse(path).getroot()
    widgets: Dict[str, Any] = {}
    for element in root.iter("widget"):
        cls, name = element.get("class"), element.get("name")
        props = {p.get("name"): _value(p) for p in element.findall("property") if p.get("stdset") != "0"}
        widgets[name] = FACTORY.get(cls, Widget)(cls, name, **props)
    top = widgets[root.find("widget").get("name")]
    object.__setattr__(top, "children", [w for n, w in widgets.items() if w is not top])
    receivers = []
    for connection in root.iter("connection"):
        sender, receiver = widgets[connection.findtext("sender")], widgets[connection.findtext("receiver")]
        sender._check_signal(connection.findtext("signal"))
        if not qt_signal(receiver._cls, connection.findtext("slot")) and not any(
            normalise_signature(connection.findtext("slot")) in e["slots"] for e in qt_chain(receiver._cls)
        ):
            raise AttributeError(f"{receiver._cls} has no slot {connection.findtext('slot')} ({QT_API_FILE.name})")
        if connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)":
            receivers.append(receiver)
    object.__setattr__(top, "scene_receivers", receivers)
    return top


def child_widget_variables(widget: "TopWidget") -> types.SimpleNamespace:
    """slicer.util.childWidgetVariables: every child widget under its ``objectName``."""
    return types.SimpleNamespace(**{c.objectName: c for c in widget.children})


TIMERS: List["Timer"] = []


class Timer(FakeObject):
    """qt.QTimer: fires only when the test calls ``fire()`` or ``App.processEvents()``."""

    CLASS = "QTimer"

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "interval", 0)
        object.__setattr__(self, "singleShot", False)
        object.__setattr__(self, "active", False)
        TIMERS.append(self)

    def setInterval(self, ms: int) -> None:
        object.__setattr__(self, "interval", ms)

    def setSingleShot(self, single: bool) -> None:
        object.__setattr__(self, "singleShot", single)

    def start(self) -> None:
        object.__setattr__(self, "active", True)

    def stop(self) -> None:
        object.__setattr__(self, "active", False)

    def fire(self) -> None:
        if self.singleShot:
            object.__setattr__(self, "active", False)
        self.emit("timeout()")


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
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=3, BusyCursor=16)  # Qt::ItemDataRole, Qt::CursorShape
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
            # as Slicer 5.8 / 5.10 / main: without a parent, a top-level qMRMLWidget is made, set up and shown here
            self.moduleName = type(self).__name__[: -len("Widget")]
            self.parent = parent or Widget("qMRMLWidget", "topLevel")
            self.layout = FormLayout("QVBoxLayout", "moduleLayout")
            if not parent:
                self.setup()
                self.parent.show()

        def setup(self) -> None:
            pass

        def onReload(self) -> None:
            # slicer.util.reloadScriptedModule (5.8, 5.10, main) calls the old widget's cleanup(), then builds anew
            if hasattr(self, "cleanup"):
                self.cleanup()
            self.reloaded = True

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, requestedDelay: Any = None, msec: Any = None) -> None:
            DIALOGS.append(f"delayDisplay: {message}")

    mod.ScriptedLoadableModule = ScriptedLoadableModule
    mod.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    mod.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return mod


class App:
    """slicer.app: ``processEvents`` fires every active timer once (time passes only there, as in an event loop);
    ``testingEnabled()`` is what ``--testing`` (ctest) sets."""

    def __init__(self, testing: bool = True) -> None:
        self.testing = testing

    def processEvents(self) -> None:
        for timer in list(TIMERS):
            if timer.active:
                timer.fire()

    def testingEnabled(self) -> bool:
        return self.testing

    def setOverrideCursor(self, cursor: Any) -> None:
        CURSORS.append(cursor)

    def restoreOverrideCursor(self) -> None:
        CURSORS.pop()


def module_panel() -> Any:
    """What Slicer passes to a module widget: its panel in the module panel (``isEntered`` while shown)."""
    return types.SimpleNamespace(isEntered=True)


def make_i18n() -> types.ModuleType:
    mod = types.ModuleType("slicer.i18n")
    mod.tr = lambda text: text
    mod.translate = lambda context, text: text
    return mod


@contextlib.contextmanager
def try_with_error_display(message: Any = None, show: bool = True, waitCursor: bool = False):
    """slicer.util.tryWithErrorDisplay: the wait cursor while the block runs (``waitCursor``), then the message with
    the exception text (cursor restored first), re-raised."""
    if waitCursor:
        CURSORS.append("WaitCursor")
    try:
        yield
    except Exception as exc:
        if waitCursor:
            CURSORS.pop()
            waitCursor = False
        if show:
            DIALOGS.append(f"{message}\n\n{exc}")
        raise
    finally:
        if waitCursor:
            CURSORS.pop()


def error_display(
    text: str, windowTitle: Any = None, parent: Any = None, standardButtons: Any = None, **kwargs: Any
) -> None:
    DIALOGS.append(text)


class PlotsLogic:
    shown: List[Any] = []

    def ShowChartInLayout(self, chart: Any) -> None:
        self.shown.append(chart)
