"""``slicer.app``, ``qt.QSettings()`` and ``qt.QFileDialog`` against the real thing (issue #22): every member the module
calls on them is one the real class offers from Python in every configuration of ``qt_api/qt_api.json`` (Qt 5.15 with
Slicer 5.8.0 / 5.10.0 / main, and Slicer main on Qt 6), taking that many arguments; and the stand-ins the panel tests
install (``fakeslicer.App``, ``fakeslicer.Settings``, ``make_qt().QFileDialog``) offer nothing the real class lacks
and accept no argument count it refuses. ``slicer.app`` is a ``qSlicerApplication`` (its chain runs through
``qSlicerCoreApplication``, ``QApplication``, ``QGuiApplication`` and ``QCoreApplication`` to ``QObject``);
``testingEnabled()`` and the no-argument ``processEvents()`` are Slicer's PythonQt decorators (the table's
``decorators``)."""

import ast
import inspect
import typing
from typing import Any, Dict, List, Optional, Tuple

import pytest

import fakeslicer
from conftest import REPO
from qt_calls import QT_API, overloads
from UNetSigmoidSegLib.widget import remote_rules

RECEIVERS = {"slicer.app": "qSlicerApplication", "qt.QSettings()": "QSettings", "qt.QFileDialog": "QFileDialog"}
STAND_INS = {  # what the panel tests install for each receiver
    "slicer.app": fakeslicer.App,
    "qt.QSettings()": fakeslicer.Settings,
    "qt.QFileDialog": fakeslicer.make_qt().QFileDialog,
}
# a member passed on instead of called: how many arguments the function it is passed to calls it with (its
# ``Callable[[...], ...]`` annotation)
CONSUMERS = {"R.load": remote_rules.load, "R.save": remote_rules.save}


def receiver(node: ast.AST) -> Optional[str]:
    text = ast.unparse(node)
    return text if text in RECEIVERS else None


def callback_arity(call: ast.Call, arg: ast.AST) -> Optional[int]:
    """The argument count ``call``'s function gives ``arg`` (a passed-on member), from its Callable annotation."""
    consumer = CONSUMERS.get(ast.unparse(call.func))
    if consumer is None or arg not in call.args:
        return None
    parameter = list(inspect.signature(consumer).parameters)[call.args.index(arg)]
    hint = typing.get_type_hints(consumer)[parameter]
    return len(typing.get_args(hint)[0])


def uses(source: str, origin: str) -> List[Dict[str, Any]]:
    """Each ``<receiver>.NAME(...)`` call, and each ``<receiver>.NAME`` passed on to a known consumer: the receiver,
    the member, the argument count (None: unknown) and where."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and receiver(node.value)):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            unpacks = any(isinstance(a, ast.Starred) for a in parent.args) or bool(parent.keywords)
            count = None if unpacks else len(parent.args)
        elif isinstance(parent, ast.Call):
            count = callback_arity(parent, node)
        else:
            count = None
        found.append({"on": receiver(node.value), "name": node.attr, "args": count, "where": f"{origin}:{node.lineno}"})
    return found


def arities(cls: str, name: str) -> List[Tuple[str, int, int]]:
    """(signature, fewest, most) of what Python reaches as ``cls.name``: slots, invokables, signals, Slicer's
    decorators and (Qt's own classes) public methods, with ``qt_signatures.DEFAULTS``."""
    return [(sig, fewest, most) for sig, fewest, most, _types in overloads(cls, name)]


def problems(use: Dict[str, Any]) -> List[str]:
    cls = RECEIVERS[use["on"]]
    found = arities(cls, use["name"])
    if not found:
        return [f"{use['where']}: {use['on']}.{use['name']}: {cls} has no such member in every configuration"]
    n = use["args"]
    if n is not None and not any(fewest <= n <= most for _sig, fewest, most in found):
        offered = ", ".join(sig for sig, _f, _m in found)
        return [f"{use['where']}: {use['on']}.{use['name']} with {n} arguments: {cls} offers {offered}"]
    return []


def product_uses() -> List[Dict[str, Any]]:
    found = []
    for path in sorted((REPO / "UNetSigmoidSeg").rglob("*.py")):
        if "egg-info" not in str(path):
            found += uses(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())
    return found


def stand_in_problems(on: str, stand_in: Any) -> List[str]:
    """What the stand-in for ``on`` offers that the real class does not: a public member missing there, or an
    argument count no real overload takes."""
    cls = RECEIVERS[on]
    out = []
    for name, member in vars(stand_in).items():
        if name.startswith("_") or not callable(member):
            continue
        found = arities(cls, name)
        if not found:
            out.append(f"{on}.{name}: the stand-in offers it, {cls} does not")
            continue
        params = list(inspect.signature(member).parameters.values())
        if isinstance(stand_in, type):
            params = params[1:]  # self
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            out.append(f"{on}.{name}: the stand-in takes *args / **kwargs, {cls} does not")
            continue
        most = len(params)
        fewest = len([p for p in params if p.default is p.empty])
        for n in range(fewest, most + 1):
            if not any(lo <= n <= hi for _sig, lo, hi in found):
                out.append(f"{on}.{name}: the stand-in takes {n} arguments, {cls} does not")
    return out


def test_the_table_has_the_application_and_settings_classes():
    chain = []
    cls: Optional[str] = "qSlicerApplication"
    while cls in QT_API:
        chain.append(cls)
        cls = None if cls == "QObject" else QT_API[cls]["base"]
    assert chain == [
        "qSlicerApplication",
        "qSlicerCoreApplication",
        "QApplication",
        "QGuiApplication",
        "QCoreApplication",
        "QObject",
    ]
    assert QT_API["QSettings"]["base"] == "QObject" and "setValue(QString,QVariant)" in QT_API["QSettings"]["methods"]
    assert "setOverrideCursor(QCursor)" in QT_API["QGuiApplication"]["methods"]  # static methods are kept
    assert "processEvents(QEventLoop::ProcessEventsFlags)" in QT_API["QCoreApplication"]["methods"]
    assert QT_API["qSlicerCoreApplication"]["decorators"] == [
        "testingEnabled()",
        "sendEvent(QObject*,QEvent*)",
        "processEvents()",
    ]


def test_every_call_on_slicer_app_settings_and_file_dialog_fits_every_configuration():
    found = product_uses()
    names = {(u["on"], u["name"]) for u in found}
    assert names >= {
        ("slicer.app", "processEvents"),
        ("slicer.app", "testingEnabled"),
        ("slicer.app", "setOverrideCursor"),
        ("slicer.app", "restoreOverrideCursor"),
        ("qt.QSettings()", "value"),
        ("qt.QSettings()", "setValue"),
        ("qt.QFileDialog", "getExistingDirectory"),
    }, names
    assert all(u["args"] is not None for u in found), [u for u in found if u["args"] is None]
    assert [p for u in found for p in problems(u)] == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("slicer.app.processEvent()", "qSlicerApplication has no such member"),
        ("slicer.app.testingEnabled(True)", "testingEnabled with 1 arguments"),
        ("slicer.app.setOverrideCursor()", "setOverrideCursor with 0 arguments"),
        ("qt.QSettings().getValue(k)", "QSettings has no such member"),
        ("qt.QSettings().setValue(k)", "setValue with 1 arguments"),
        ("R.load(qt.QSettings().setValue)", "setValue with 1 arguments"),
        ("qt.QFileDialog.getDirectory(None, 'a', '')", "QFileDialog has no such member"),
    ],
)
def test_the_check_catches_calls_the_real_classes_refuse(source, expected):
    found = [p for u in uses(source, "planted.py") for p in problems(u)]
    assert found and all(expected in p for p in found), found


@pytest.mark.parametrize("on", sorted(STAND_INS))
def test_each_stand_in_offers_only_what_the_real_class_has(on):
    assert stand_in_problems(on, STAND_INS[on]) == []


def test_the_stand_in_check_catches_what_slicer_lacks():
    class App(fakeslicer.App):
        def processEvents(self, flags, maxtime, extra):  # no overload takes 3
            pass

        def quitAll(self):  # no such member
            pass

    class Settings(fakeslicer.Settings):
        def value(self, key, default=None, *more):
            pass

    assert stand_in_problems("slicer.app", App) == [
        "slicer.app.processEvents: the stand-in takes 3 arguments, qSlicerApplication does not",
        "slicer.app.quitAll: the stand-in offers it, qSlicerApplication does not",
    ]
    assert stand_in_problems("qt.QSettings()", Settings) == [
        "qt.QSettings().value: the stand-in takes *args / **kwargs, QSettings does not"
    ]


def test_the_stand_ins_are_the_ones_the_fixtures_install():
    qt = fakeslicer.make_qt()
    assert qt.QSettings is fakeslicer.Settings
    fixtures = (REPO / "Testing" / "widget" / "widget_fixtures.py").read_text(encoding="utf-8")
    assert "fakeslicer.App(" in fixtures and "fakeslicer.make_qt()" in fixtures
