"""A static, signature-aware check of the module's Qt / CTK / qMRML calls, resolved as PythonQt resolves them.

For every call ``<receiver>.<member>(…)``, static call ``qt.QClass.member(…)`` and constructor ``qt.QClass(…)`` /
``ctk.ctkClass(…)`` in the module's Python whose receiver's class is known, it finds the overloads in
``qt_api/qt_api.json`` (the real headers) plus the default arguments of ``qt_signatures.DEFAULTS`` and asks whether
one takes the call: the number of positional arguments within that overload's arity, each argument convertible to its
parameter type by PythonQt's lenient pass (``PythonQtConv``: an int, float or bool for ``int`` / ``double`` / enums, a
str or a sequence for ``QStringList``, ``None`` or an object of a derived class for a pointer, anything for
``QVariant``, ``bool`` and ``QString``, since PythonQt converts any object there through ``bool()`` / ``str()``), no
keyword arguments (PythonQt's slots take none; constructors take properties). ``connect`` / ``disconnect`` take a
signal string, which must be a signal of the class in every configuration of the JSON (Qt 5.15 and Qt 6 alike: a
signal Qt 6 removed is not in the table, and the JSON's ``_meta.not_in_every_configuration`` says which configuration
lacks it). Assignments ``<receiver>.<property> = value`` must name a writable property
whose type (``qt_signatures.PROPERTY_TYPES``) takes the value, and reads must name a member the class has.

What it knows of a receiver: ``ui.<name>`` / ``….ui.<name>`` (a widget of Resources/UI/UNetSigmoidSeg.ui, any name
``ui`` or attribute ``.ui`` being the panel's widget namespace); a local name or ``self.<attribute>`` every assignment
of which it can type (``qt.QTimer()``, ``ctk.ctkSliderWidget()``, ``slicer.util.loadUI(…)``, another known widget),
``for`` targets over a literal tuple of widgets (each one is checked); ``<widget>.layout()`` (the layout class the .ui
gives that widget) and the returns in ``qt_signatures.RETURNS``. Argument types come from literals, f-strings,
arithmetic, ``int()`` / ``str()`` / ``_()`` …, ``qt.Qt.<Enum>`` and the known properties.

What it cannot resolve, and skips (counted in ``Report.skipped`` and listed in ``Report.unknown``): calls on objects
whose type it cannot follow — function parameters (``host``), results of non-Qt calls (``slicer.modules.….logic()``),
values from containers, anything assigned more than one kind of thing; arguments of unknown type (accepted, as
PythonQt might); signal names that are not string literals (``bindings.SIGNALS[kind]``: the test checks that table on
its own); classes missing from the JSON (``qt.QIcon``); ``*args`` calls. It does not follow the
flow of a function (a name's kind is the same everywhere in it), nor the VTK / MRML calls (``Testing/mrml``).
"""

import ast
import importlib
import inspect
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

from qt_signatures import DEFAULTS, PROPERTY_TYPES, RETURNS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
QT_API = json.loads((HERE / "qt_api" / "qt_api.json").read_text(encoding="utf-8"))
# members some configuration declares and another lacks: class -> kind -> member -> the configurations lacking it
NOT_EVERYWHERE = QT_API["_meta"]["not_in_every_configuration"]
UI_FILE = REPO / "Resources" / "UI" / "UNetSigmoidSeg.ui"
MODULE_DIR = REPO / "UNetSigmoidSeg"
WIDGET_DIR = MODULE_DIR / "UNetSigmoidSegLib" / "widget"
QT_MODULES = ("qt", "ctk", "slicer")
PACKAGES = {"UNetSigmoidSeg.py": ""}  # a source's package (else UNetSigmoidSegLib.widget)
QT_ROOTS = ("slicer.app",)  # Qt objects reached from a module (slicer.app: test_qt_stand_ins.py checks its calls)
PYTHONQT_MEMBERS = {"connect", "disconnect", "className", "inherits", "delete", "help"}
NUMBERS = ("int", "float", "bool", "enum")
CALL_KINDS = {"int": "int", "len": "int", "round": "int", "float": "float", "bool": "bool", "isinstance": "bool"}
CALL_KINDS.update({"str": "str", "repr": "str", "_": "str", "tr": "str", "translate": "str"})
CALL_KINDS.update({"list": "seq", "tuple": "seq", "sorted": "seq", "dict": "dict"})
INT_TYPES = {"int", "uint", "long", "short", "char", "qint64", "quint64", "qlonglong", "qulonglong", "unsigned int"}


class Obj(NamedTuple):
    """A Qt / CTK / qMRML object of class ``cls`` (``widget``: its name in the .ui, when it is one)."""

    cls: str
    widget: Optional[str] = None


UI = "ui-namespace"


class PyValue:
    """A constant of a plain-Python module of the project (``rules.ACTIVATIONS``), read by importing it: iterating
    it types the loop's names (``for value, tip in rules.ACTIVATIONS``)."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, PyValue) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


class Module(NamedTuple):
    """A name bound by an import (``qualified``: the module's full name, "" when unknown)."""

    qualified: str


def value_kind(value):
    for kind, types in (("none", type(None)), ("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    return PyValue(value) if isinstance(value, (tuple, list)) else "dict" if isinstance(value, dict) else "python"


def describe(kind) -> str:
    if isinstance(kind, (Obj, PyValue, Module)):
        return kind.cls if isinstance(kind, Obj) else "sequence" if isinstance(kind, PyValue) else "module"
    return "?" if kind is None else str(kind)


def project_constant(module: "Module", attr: str):
    """``attr`` of a project module that imports without Qt (``UNetSigmoidSegLib.widget.rules``), else None."""
    if not module.qualified.startswith("UNetSigmoidSegLib"):
        return None
    try:
        found = importlib.import_module(module.qualified)
    except Exception:  # a module that needs Qt or Slicer: its names stay unknown
        return None
    value = getattr(found, attr, None)
    return None if value is None or inspect.ismodule(value) or callable(value) else value_kind(value)


def read_ui(path: Path):
    root = ET.parse(path).getroot()
    classes = {w.get("name"): w.get("class") for w in root.iter("widget")}
    layouts = {
        w.get("name"): w.find("layout").get("class") for w in root.iter("widget") if w.find("layout") is not None
    }
    return classes, layouts, root.find("widget").get("class")


UI_CLASSES, UI_LAYOUTS, UI_ROOT = read_ui(UI_FILE)


def chain(cls: str) -> List[str]:
    out = []
    while cls in QT_API and cls not in out:
        out.append(cls)
        cls = QT_API[cls]["base"]
    return out


def split_params(signature: str) -> List[str]:
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    params: List[str] = []
    depth = 0
    current = ""
    for ch in inner:
        depth += (ch in "<(") - (ch in ">)")
        if ch == "," and depth == 0:
            params.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in params + [current] if p.strip()]


def normalise_signal(signal: str) -> str:
    """``currentPathChanged(const QString&)`` → ``currentPathChanged(QString)``, as moc normalises it."""
    params = []
    for p in split_params(signal):
        p = " ".join(p.split())
        p = p[6:] if p.startswith("const ") and p.endswith("&") else p
        params.append(p.rstrip("&").replace(" *", "*").strip())
    return f"{signal.split('(')[0].strip()}({','.join(params)})"


def category(cpp: str) -> str:
    """How PythonQt converts to a C++ parameter type: int, float, bool, str, any, strlist, ptr:<class>, value, never."""
    t = cpp.replace("const ", "").strip()
    if t.startswith("std::") or t.endswith("**"):
        return "never"  # no PythonQt conversion: that overload is not callable from Python
    if t == "char*":
        return "str"
    if t.endswith("*"):
        return "ptr:" + t[:-1]
    if t in INT_TYPES:
        return "int"
    simple = {"double": "float", "float": "float", "qreal": "float", "bool": "bool", "QString": "str"}
    if t in simple:
        return simple[t]
    if t in ("QVariant", "QStringList"):
        return "any" if t == "QVariant" else "strlist"
    if "::" in t or (t[:1].isupper() and not t.startswith("Q")):
        return "int"  # enums and flags (Qt::Alignment, Options, InsertPolicy): PythonQt passes them as ints
    return "value"


def accepts(cat: str, kind) -> bool:
    """Whether PythonQt's lenient conversion takes an argument of ``kind`` (None: unknown) for ``cat``."""
    kind = "seq" if isinstance(kind, PyValue) else kind
    if kind is None or kind == "python" or isinstance(kind, Module) or cat in ("any", "bool", "str", "value"):
        return cat != "never"
    if cat in ("int", "float"):
        return kind in NUMBERS
    if cat == "strlist":
        return kind in ("str", "seq")
    if cat.startswith("ptr:"):
        target = cat[4:]
        if isinstance(kind, Obj):
            return target in chain(kind.cls) if target in QT_API else not target.startswith("vtk")
        return kind in ("none", "object")
    return False


def overloads(cls: str, name: str):
    """[(``Class::signature``, fewest arguments, most arguments, parameter types)] of ``cls.name`` from Python:
    signals, slots and invokables of every class (one entry per arity), and public methods of Qt's own classes."""
    found = []
    for c in chain(cls):
        entry = QT_API[c]
        for kind in ("slots", "invokables", "signals", "methods", "decorators"):
            if kind == "methods" and entry["source"] != "qt":
                continue  # PythonQt wraps only the meta-object members of CTK / qMRML classes
            for sig in entry.get(kind, []):  # "decorators": Slicer's PythonQt decorators (qSlicerCoreApplication)
                if sig.split("(")[0] == name:
                    types = split_params(sig)
                    fewest = len(types) - (DEFAULTS.get(f"{c}.{sig}", 0) if kind == "methods" else 0)
                    found.append((f"{c}::{sig}", fewest, len(types), types))
    return found


def constructors(cls: str):
    sigs = [s for s in QT_API[cls]["methods"] if s.split("(")[0] == cls]
    return [
        (f"{cls}::{s}", len(split_params(s)) - DEFAULTS.get(f"{cls}.{s}", 0), len(split_params(s)), split_params(s))
        for s in sigs
    ]


def signals_of(cls: str) -> List[str]:
    return [s for c in chain(cls) for s in QT_API[c]["signals"]]


def property_of(cls: str, name: str):
    """(owning class, its property_info) or None."""
    for c in chain(cls):
        if name in QT_API[c]["properties"]:
            return c, QT_API[c]["property_info"].get(name, {})
    return None


def property_kind(cls: str, name: str):
    for c in chain(cls):
        cpp = PROPERTY_TYPES.get(f"{c}.{name}")
        if cpp:
            return {"int": "int", "float": "float", "bool": "bool", "str": "str"}.get(category(cpp))
    return None


def signal_problem(cls: str, signal: str) -> Optional[str]:
    """Why ``signal`` cannot be connected on ``cls`` in every configuration, Qt 5.15 and Qt 6 (None: it can)."""
    sig = normalise_signal(signal)
    if sig in signals_of(cls):
        return None
    for c in chain(cls):
        lacking = NOT_EVERYWHERE.get(c, {}).get("signals", {}).get(sig)
        if lacking:
            return f"{c}::{sig} is not declared in {', '.join(lacking)} (qt_api.json)"
    return f"{cls} has no signal {sig!r} (qt_api.json)"


def dotted(node) -> Optional[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else None


class Report:
    def __init__(self) -> None:
        self.errors: List[str] = []
        self.checked: Counter = Counter()  # "Class.member" → how many calls / writes / connects were checked
        self.skipped: Counter = Counter()  # reason → how many were skipped
        self.unknown: List[str] = []  # "file:line: call" whose receiver's type is unknown


class Scope:
    """The names a function (or the module) binds: each to the expressions assigned to it (None: unknown)."""

    def __init__(self, parent: Optional["Scope"]) -> None:
        self.parent = parent
        self.bound: Dict[str, list] = {}

    def bind(self, target, value, owner: "Scope") -> None:
        """``value``: the expression assigned, None (unknown), or ("iter", expression, indices): an element of what
        ``expression`` iterates over (destructured by ``indices``)."""
        if isinstance(target, ast.Name):
            self.bound.setdefault(target.id, []).append((value, owner))
        elif isinstance(target, (ast.Tuple, ast.List)):
            same = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
            for k, element in enumerate(target.elts):
                part = value.elts[k] if same else None
                if isinstance(value, tuple):
                    part = (value[0], value[1], value[2] + (k,))
                self.bind(element, part, owner)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, None, owner)

    def collect(self, body: Sequence[ast.stmt], package: str) -> None:
        todo = list(body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.setdefault(node.name, []).append(("def", self))
                continue
            if isinstance(node, ast.Lambda):
                continue
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self.bind(target, node.value, self)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                self.bind(node.target, getattr(node, "value", None) if isinstance(node, ast.AnnAssign) else None, self)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                if isinstance(node.iter, (ast.Tuple, ast.List)):
                    for element in node.iter.elts:
                        self.bind(node.target, element, self)
                else:
                    self.bind(node.target, ("iter", node.iter, ()), self)
            elif isinstance(node, (ast.withitem,)) and node.optional_vars is not None:
                self.bind(node.optional_vars, None, self)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.bound.setdefault((alias.asname or alias.name).split(".")[0], []).append((Module(""), self))
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # ``from . import rules``: a module; ``from .x import f``: maybe not
                    qualified = f"{source}.{alias.name}" if node.module is None else source
                    self.bound.setdefault(alias.asname or alias.name, []).append((Module(qualified), self))
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bound.setdefault(node.name, []).append((None, self))
            elif isinstance(node, ast.comprehension):
                self.bind(node.target, None, self)
            todo.extend(ast.iter_child_nodes(node))

    def lookup(self, name: str):
        scope = self
        while scope is not None:
            if name in scope.bound:
                return scope.bound[name]
            scope = scope.parent
        return []


class Checker:
    """Checks one or more sources (see the module docstring); ``self_attrs``: ``self.<name>`` → kind, from all."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.self_attrs: Dict[str, object] = {}
        self.methods: set = set()  # names of functions defined in the sources (``self.<method>()`` is not Qt)
        self._busy: set = set()
        self.package = "UNetSigmoidSegLib.widget"  # of the source being read (relative imports)

    # ------------------------------------------------------------------ kinds
    def kinds(self, node, scope: Scope) -> list:
        """Every kind ``node`` may have (None in the list: unknown)."""
        if isinstance(node, ast.Name) and node.id != "ui":
            producers = scope.lookup(node.id)
            if not producers or (node.id, id(scope)) in self._busy:
                return [None]
            self._busy.add((node.id, id(scope)))
            try:
                out = []
                for value, owner in producers:
                    out.extend(self.produced(value, owner))
                return out
            finally:
                self._busy.discard((node.id, id(scope)))
        return [self.infer(node, scope)]

    def produced(self, value, owner: Scope) -> list:
        if value is None or value == "def" or isinstance(value, Module):
            return [value]
        if not isinstance(value, tuple):
            return self.kinds(value, owner)
        out = []  # ("iter", expression, indices): the elements of a project constant iterated over
        for kind in self.kinds(value[1], owner):
            if not isinstance(kind, PyValue):
                out.append(None)
                continue
            for element in kind.value:
                for k in value[2]:
                    element = element[k] if isinstance(element, (tuple, list)) and k < len(element) else None
                out.append(value_kind(element) if element is not None else None)
        return out or [None]

    def infer(self, node, scope: Scope):
        """The kind of ``node`` when it has one: "int", "float", "bool", "str", "none", "seq", "dict", "callable",
        "enum", "object", "python" (a project object), UI, Obj(…), PyValue(…), Module(…); else None."""
        if isinstance(node, ast.Name):
            if node.id == "ui":
                return UI
            found = set(self.kinds(node, scope))
            if len(found) > 1 and all(isinstance(k, Obj) for k in found) and len({k.cls for k in found}) == 1:
                return Obj(found.pop().cls)  # several widgets of one class (a loop over combo boxes)
            return found.pop() if len(found) == 1 else None
        if isinstance(node, ast.Constant):
            value = node.value
            for kind, types in (("none", type(None)), ("bool", bool), ("int", int), ("float", float), ("str", str)):
                if isinstance(value, types):
                    return kind
            return None
        if isinstance(node, ast.JoinedStr):
            return "str"
        simple = {ast.List: "seq", ast.Tuple: "seq", ast.ListComp: "seq", ast.Dict: "dict", ast.Lambda: "callable"}
        simple.update({ast.Compare: "bool", ast.Set: "seq", ast.GeneratorExp: "seq"})
        if type(node) in simple:
            return simple[type(node)]
        if isinstance(node, ast.UnaryOp):
            return "bool" if isinstance(node.op, ast.Not) else self.infer(node.operand, scope)
        if isinstance(node, ast.BinOp):
            return self.binop(node, scope)
        if isinstance(node, (ast.IfExp, ast.BoolOp)):
            parts = [node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values
            found = {self.infer(p, scope) for p in parts}
            return found.pop() if len(found) == 1 else None
        if isinstance(node, ast.Attribute):
            return self.attribute(node, scope)
        if isinstance(node, ast.Call):
            return self.call_result(node, scope)
        return None

    def binop(self, node: ast.BinOp, scope: Scope):
        left, right = self.infer(node.left, scope), self.infer(node.right, scope)
        if left == right == "str" and isinstance(node.op, ast.Add) or left == "str" and isinstance(node.op, ast.Mod):
            return "str"
        if left in NUMBERS and right in NUMBERS:
            if isinstance(node.op, ast.Div) or "float" in (left, right):
                return "float"
            return "int"
        return None

    def attribute(self, node: ast.Attribute, scope: Scope):
        if node.attr == "ui":
            return UI
        name = dotted(node) or ""
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "qt" and parts[2][:1].isupper():
            return "enum"  # qt.Qt.ToolTipRole, qt.QFileDialog.ShowDirsOnly
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return self.self_attrs.get(node.attr)
        base = self.infer(node.value, scope)
        if isinstance(base, Module):
            return project_constant(base, node.attr)
        if base == UI:
            return Obj(UI_CLASSES[node.attr], node.attr) if node.attr in UI_CLASSES else None
        if isinstance(base, Obj):
            return property_kind(base.cls, node.attr)
        return None

    def call_result(self, node: ast.Call, scope: Scope):
        func = node.func
        if isinstance(func, ast.Name):
            defined = all(k == "def" or isinstance(k, Module) for k in self.kinds(func, scope))  # imported or defined
            return CALL_KINDS.get(func.id) or ("python" if defined else None)
        name = dotted(func) or ""
        parts = name.split(".")
        if len(parts) == 2 and parts[0] in QT_MODULES and parts[1] in QT_API:
            return Obj(parts[1])  # a constructor
        if name == "slicer.util.loadUI":
            return Obj(UI_ROOT)
        if not isinstance(func, ast.Attribute):
            return None
        receiver = self.infer(func.value, scope)
        if receiver == "str" and func.attr in ("strip", "lower", "upper", "format", "replace", "join"):
            return "str"
        if not isinstance(receiver, Obj):
            return None
        if func.attr == "layout" and not node.args and receiver.widget in UI_LAYOUTS:
            return Obj(UI_LAYOUTS[receiver.widget])
        for c in chain(receiver.cls):
            returned = RETURNS.get(f"{c}.{func.attr}")
            if returned:
                return Obj(returned) if returned in QT_API else returned
        return None

    # ------------------------------------------------------------------ checks
    def error(self, where: str, text: str) -> None:
        self.report.errors.append(f"{where}: {text}")

    def check_arguments(self, where: str, label: str, candidates, node: ast.Call, scope: Scope) -> None:
        """One of ``candidates`` (from ``overloads``) must take the call's positional arguments."""
        if any(isinstance(a, ast.Starred) for a in node.args):
            self.report.skipped["*args: arity unknown"] += 1
            return
        kinds = [self.infer(a, scope) for a in node.args]
        for _where, fewest, most, types in candidates:
            if fewest <= len(kinds) <= most and all(accepts(category(t), k) for t, k in zip(types, kinds)):
                self.report.checked[label] += 1
                return
        shown = ", ".join(describe(k) for k in kinds)
        offered = "; ".join(f"{w} ({f}..{m} arguments)" if f != m else f"{w}" for w, f, m, _t in candidates)
        self.error(where, f"{label}({shown}) matches no overload PythonQt could pick: {offered}")

    def check_call(self, where: str, cls: str, node: ast.Call, scope: Scope) -> None:
        member = node.func.attr
        label = f"{cls}.{member}"
        if member in ("connect", "disconnect"):
            self.check_connect(where, cls, node)
            return
        if member in PYTHONQT_MEMBERS:
            self.report.checked[label] += 1
            return
        candidates = overloads(cls, member)
        if property_of(cls, member) or not candidates:  # PythonQt looks a name up as a property first
            what = "a property, not callable" if property_of(cls, member) else "no such signal, slot or method"
            self.error(where, f"{label}(): {what} (qt_api.json)")
            return
        if node.keywords:
            self.error(where, f"{label}(): PythonQt passes no keyword arguments to a method")
            return
        self.check_arguments(where, label, candidates, node, scope)

    def check_connect(self, where: str, cls: str, node: ast.Call) -> None:
        member = node.func.attr
        counts = (2, 3) if member == "connect" else (1, 2, 3)
        if node.keywords or len(node.args) not in counts:
            self.error(where, f"{cls}.{member}() takes {' or '.join(map(str, counts))} positional arguments")
            return
        signal = node.args[0]
        if not (isinstance(signal, ast.Constant) and isinstance(signal.value, str)):
            self.report.skipped["signal name not a string literal"] += 1
            return
        problem = signal_problem(cls, signal.value)
        if problem:
            self.error(where, f"{member}({signal.value!r}): {problem}")
        else:
            self.report.checked[f"{cls}.{member}({normalise_signal(signal.value)})"] += 1

    def check_constructor(self, where: str, cls: str, node: ast.Call, scope: Scope) -> None:
        for keyword in node.keywords:  # PythonQt sets properties from a constructor's keyword arguments
            found = keyword.arg and property_of(cls, keyword.arg)
            if not found or not found[1].get("writable"):
                self.error(where, f"{cls}({keyword.arg}=…): not a writable property")
        call = ast.Call(func=node.func, args=node.args, keywords=[])
        self.check_arguments(where, f"{cls}.{cls}", constructors(cls), call, scope)

    def check_write(self, where: str, cls: str, name: str, value_kind) -> None:
        found = property_of(cls, name)
        if found is None:
            self.error(where, f"{cls}.{name} = …: no property {name!r} (qt_api.json)")
        elif not found[1].get("writable"):
            self.error(where, f"{cls}.{name} = …: read-only property")
        elif value_kind is not None and property_kind(cls, name) and not accepts(property_kind(cls, name), value_kind):
            self.error(where, f"{cls}.{name} = <{describe(value_kind)}>: the property takes {property_kind(cls, name)}")
        else:
            self.report.checked[f"{cls}.{name}="] += 1

    def check_read(self, where: str, cls: str, name: str) -> None:
        if property_of(cls, name) or overloads(cls, name) or name in PYTHONQT_MEMBERS:
            return
        if any(s.split("(")[0] == name for s in signals_of(cls)):
            return
        self.error(where, f"{cls}.{name}: no property, signal, slot or method of that name (qt_api.json)")

    # ------------------------------------------------------------------ walking the sources
    def build(self, node, scope: Scope, scopes: Dict[int, Scope]) -> None:
        """A ``Scope`` per function and lambda (its parameters unknown), in ``scopes`` by node id."""
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = Scope(scope)
                a = child.args
                for arg in a.posonlyargs + a.args + a.kwonlyargs + [v for v in (a.vararg, a.kwarg) if v]:
                    inner.bound[arg.arg] = [(None, inner)]
                inner.collect(
                    child.body if isinstance(child.body, list) else [ast.Expr(value=child.body)], self.package
                )
                scopes[id(child)] = inner
            self.build(child, inner, scopes)

    def prepare(self, trees: Dict[str, ast.Module]) -> Dict[str, Dict[int, Scope]]:
        """Scopes of every source, then the kinds of ``self.<attribute>`` (one kind over all assignments)."""
        all_scopes = {}
        for name, tree in trees.items():
            self.package = PACKAGES.get(name, "UNetSigmoidSegLib.widget")
            module = Scope(None)
            module.collect(tree.body, self.package)
            scopes = {id(tree): module}
            self.build(tree, module, scopes)
            all_scopes[name] = scopes
            self.methods |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        found: Dict[str, set] = {}
        for name, tree in trees.items():
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                scope = all_scopes[name][id(function)]
                for node in ast.walk(function):
                    for target in node.targets if isinstance(node, ast.Assign) else ():
                        if isinstance(target, ast.Attribute) and dotted(target) == f"self.{target.attr}":
                            found.setdefault(target.attr, set()).update(self.kinds(node.value, scope))
        self.self_attrs = {attr: kinds.pop() for attr, kinds in found.items() if len(kinds) == 1}
        return all_scopes

    def receivers(self, node, scope: Scope) -> list:
        return self.kinds(node, scope) if isinstance(node, ast.Name) else [self.infer(node, scope)]

    def opaque(self, node, kinds: list, scope: Scope) -> bool:
        """A receiver that is plainly not a Qt object: ``self`` (the module's own classes), a module, a method of
        the sources, a str / list / dict."""
        if isinstance(node, ast.Name) and node.id == "self":
            return True
        name = dotted(node) or ""
        root = self.kinds(ast.Name(id=name.split(".")[0]), scope)
        if any(isinstance(k, Module) for k in root) and not name.startswith(QT_ROOTS):
            return True  # os.path.join, slicer.util.loadUI: module functions (slicer.app is a Qt object)
        if isinstance(node, ast.Attribute) and dotted(node) == f"self.{node.attr}" and node.attr in self.methods:
            return True
        return any(isinstance(k, (Module, PyValue)) or k in ("def", "python", "str", "seq", "dict", UI) for k in kinds)

    def visit(self, name: str, node, scope: Scope, call_funcs: set) -> None:
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            self.visit_call(where, node, scope)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                pairs = [(target, node.value if isinstance(node, ast.Assign) else None)]
                if isinstance(target, ast.Tuple):
                    same = isinstance(node.value, ast.Tuple) and len(node.value.elts) == len(target.elts)
                    pairs = [(t, node.value.elts[k] if same else None) for k, t in enumerate(target.elts)]
                for element, value in pairs:
                    if isinstance(element, ast.Attribute):
                        kind = self.infer(value, scope) if value is not None else None
                        for cls in sorted({k.cls for k in self.receivers(element.value, scope) if isinstance(k, Obj)}):
                            self.check_write(where, cls, element.attr, kind)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in call_funcs:
            kinds = self.receivers(node.value, scope)
            if UI in kinds and node.attr not in UI_CLASSES and node.attr != "ui":
                self.error(where, f"ui.{node.attr}: no widget of that name in {UI_FILE.name}")
            for cls in sorted({k.cls for k in kinds if isinstance(k, Obj)}):
                self.check_read(where, cls, node.attr)

    def visit_call(self, where: str, node: ast.Call, scope: Scope) -> None:
        func = node.func
        parts = (dotted(func) or "").split(".")
        if len(parts) == 2 and parts[0] in QT_MODULES and re.match(r"(Q[A-Z]|ctk[A-Z]|qMRML|qSlicer)", parts[1]):
            if parts[1] in QT_API:
                self.check_constructor(where, parts[1], node, scope)
            else:
                self.report.skipped["class not in qt_api.json"] += 1
                self.report.unknown.append(f"{where}: {ast.unparse(func)}(…) (class not in the table)")
            return
        if len(parts) == 3 and parts[0] in QT_MODULES and parts[1] in QT_API:
            self.check_call(where, parts[1], node, scope)  # a static method: qt.QFileDialog.getExistingDirectory
            return
        kinds = self.receivers(func.value, scope)
        classes = sorted({k.cls for k in kinds if isinstance(k, Obj)})
        for cls in classes:
            self.check_call(where, cls, node, scope)
        if not classes and None in kinds and not self.opaque(func.value, kinds, scope):
            self.report.skipped["receiver of unknown type"] += 1
            self.report.unknown.append(f"{where}: {ast.unparse(func)}(…)")

    def run(self, sources: Dict[str, str]) -> Report:
        """Check ``{file name: source text}`` together (``self.<attribute>`` is shared: a mixin's ``self``)."""
        trees = {name: ast.parse(text, filename=name) for name, text in sources.items()}
        all_scopes = self.prepare(trees)
        for name, tree in trees.items():
            call_funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
            stack = [(tree, all_scopes[name][id(tree)])]
            while stack:
                node, scope = stack.pop()
                for child in ast.iter_child_nodes(node):
                    inner = all_scopes[name].get(id(child), scope)
                    self.visit(name, child, inner if isinstance(child, ast.Lambda) else scope, call_funcs)
                    stack.append((child, inner))
        order = {name: k for k, name in enumerate(trees)}

        def by_place(text: str):
            name, line = text.split(":")[:2]
            return order[name], int(line) if line.isdigit() else 0, text

        self.report.errors.sort(key=by_place)
        self.report.unknown.sort(key=by_place)
        return self.report


def check_sources(sources: Dict[str, str]) -> Report:
    return Checker(Report()).run(sources)


def qt_sources() -> List[Path]:
    """The module file and every ``UNetSigmoidSegLib/widget/*.py`` that imports qt, ctk, slicer or vtk or names the
    panel's ``ui`` (the others are plain-Python rules, tested without Qt)."""
    found = [MODULE_DIR / "UNetSigmoidSeg.py"]
    for path in sorted(WIDGET_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names_ui = any(isinstance(n, ast.Name) and n.id == "ui" for n in ast.walk(tree))
        if imported & {"qt", "ctk", "slicer", "vtk"} or names_ui:
            found.append(path)
    return found


def check_module() -> Report:
    """The module's Qt wiring: ``qt_sources()``, checked together."""
    return check_sources({p.name: p.read_text(encoding="utf-8") for p in qt_sources()})
