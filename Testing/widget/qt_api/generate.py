#!/usr/bin/env python3
"""Generate ``qt_api.json``: the Qt meta-object API (properties with writability and NOTIFY signal, signals, slots,
``Q_INVOKABLE``s, public methods) of every Qt / CTK / qMRML class the module's panel uses, parsed from the real C++
headers of each supported configuration, kept where all configurations agree. ``Testing/widget/fakeslicer.py``
refuses any property, signal or slot that is not in it (as PythonQt refuses what a class does not declare).

Needs the headers, not the network: a Slicer and a CTK git directory (read at the refs in ``CONFIGURATIONS``) and a
Qt include tree. See README.md beside this file for where they came from and the exact command. Tests never run this:
the JSON is the checked artefact.
"""

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

from headers import Source, class_bodies, parse_class, strip_comments

# (label, Slicer ref, CTK commit = Slicer_CTK_GIT_TAG of that ref in SuperBuild/External_CTK.cmake, which Qt include
# tree: "qt" = --qt (Qt 5.15), "qt6" = --qt6 (Slicer main's optional Qt 6 build))
SLICER_MAIN = "583e9b37d50ead7daf7b783dce465ccaecec8809"
CTK_MAIN = "5056664a20a3d0a393bb6d91f040525581e0dcdf"
CONFIGURATIONS = [
    ("Slicer 5.8.0", "v5.8.0", "82cae5781621845486bad2697aed095f04cfbe76", "qt"),
    ("Slicer 5.10.0", "v5.10.0", "dd4caeae7e979cf441e44ee85d3b0780120d113d", "qt"),
    ("Slicer main", SLICER_MAIN, CTK_MAIN, "qt"),
    ("Slicer main on Qt 6", SLICER_MAIN, CTK_MAIN, "qt6"),
]
# the classes the panel's .ui and Python use; their base classes are followed up to QObject
START = [
    "qMRMLWidget",
    "qMRMLNodeComboBox",
    "qMRMLTableView",
    "ctkPathLineEdit",
    "ctkSliderWidget",
    "ctkCollapsibleButton",
    "ctkCollapsibleGroupBox",
    "QComboBox",
    "QCheckBox",
    "QSpinBox",
    "QDoubleSpinBox",
    "QLineEdit",
    "QPushButton",
    "QToolButton",
    "QLabel",
    "QProgressBar",
    "QPlainTextEdit",
    "QTimer",
    "QFormLayout",
    "QVBoxLayout",
    "QFileDialog",
    "QSettings",  # qt.QSettings(): the module's per-user settings (runon.py)
    "qSlicerApplication",  # slicer.app: qSlicerApplication → qSlicerCoreApplication → QApplication → … → QObject
]
KINDS = ("properties", "signals", "slots", "invokables", "methods", "decorators")
# PythonQt decorators Slicer registers for a class (qSlicerCoreApplication: testingEnabled(), processEvents()): public
# slots of a decorator class, "static_<Class>_<name>(…)" a static member, "<name>(<Class>*, …)" an instance member
DECORATORS = {
    "qSlicerCoreApplication": (
        "slicer",
        "qSlicerBaseQTCorePythonQtDecorators.h",
        "qSlicerBaseQTBasePythonQtDecorators",
    ),
}


# class -> header file name (found by base name in the source trees)
HEADERS = {
    # Slicer
    "qMRMLNodeComboBox": ("slicer", "qMRMLNodeComboBox.h"),
    "qMRMLTableView": ("slicer", "qMRMLTableView.h"),
    "qMRMLWidget": ("slicer", "qMRMLWidget.h"),
    "qSlicerApplication": ("slicer", "qSlicerApplication.h"),
    "qSlicerCoreApplication": ("slicer", "qSlicerCoreApplication.h"),
    # CTK
    "ctkPathLineEdit": ("ctk", "ctkPathLineEdit.h"),
    "ctkSliderWidget": ("ctk", "ctkSliderWidget.h"),
    "ctkCollapsibleButton": ("ctk", "ctkCollapsibleButton.h"),
    "ctkCollapsibleGroupBox": ("ctk", "ctkCollapsibleGroupBox.h"),
    # Qt
    "QObject": ("qt", "qobject.h"),
    "QWidget": ("qt", "qwidget.h"),
    "QFrame": ("qt", "qframe.h"),
    "QAbstractScrollArea": ("qt", "qabstractscrollarea.h"),
    "QAbstractItemView": ("qt", "qabstractitemview.h"),
    "QTableView": ("qt", "qtableview.h"),
    "QAbstractButton": ("qt", "qabstractbutton.h"),
    "QPushButton": ("qt", "qpushbutton.h"),
    "QToolButton": ("qt", "qtoolbutton.h"),
    "QCheckBox": ("qt", "qcheckbox.h"),
    "QComboBox": ("qt", "qcombobox.h"),
    "QAbstractSpinBox": ("qt", "qabstractspinbox.h"),
    "QSpinBox": ("qt", "qspinbox.h"),
    "QDoubleSpinBox": ("qt", "qspinbox.h"),
    "QLineEdit": ("qt", "qlineedit.h"),
    "QLabel": ("qt", "qlabel.h"),
    "QProgressBar": ("qt", "qprogressbar.h"),
    "QPlainTextEdit": ("qt", "qplaintextedit.h"),
    "QGroupBox": ("qt", "qgroupbox.h"),
    "QTimer": ("qt", "qtimer.h"),
    "QLayout": ("qt", "qlayout.h"),
    "QFormLayout": ("qt", "qformlayout.h"),
    "QBoxLayout": ("qt", "qboxlayout.h"),
    "QVBoxLayout": ("qt", "qboxlayout.h"),
    "QDialog": ("qt", "qdialog.h"),
    "QFileDialog": ("qt", "qfiledialog.h"),
    "QSettings": ("qt", "qsettings.h"),
    "QApplication": ("qt", "qapplication.h"),
    "QGuiApplication": ("qt", "qguiapplication.h"),
    "QCoreApplication": ("qt", "qcoreapplication.h"),
}
STOP_AT = {"QObject"}  # root of every chain


# ----------------------------------------------------------------------------------------- table
def build(sources: Dict[str, Source], classes: List[str]) -> Dict[str, dict]:
    table: Dict[str, dict] = {}
    todo = list(classes)
    cache: Dict[Tuple[str, str], Dict[str, Tuple[str, int, List[str]]]] = {}
    while todo:
        cls = todo.pop(0)
        if cls in table or cls not in HEADERS:
            continue
        which, header = HEADERS[cls]
        src = sources[which]
        path = src.find(header)
        if path is None:
            table[cls] = {"error": f"{header} not found in {src.describe()}"}
            continue
        key = (which, path)
        if key not in cache:
            cache[key] = class_bodies(strip_comments(src.read(path)))
        bodies = cache[key]
        if cls not in bodies:
            table[cls] = {"error": f"class {cls} not found in {path}"}
            continue
        body, line, bases = bodies[cls]
        info = parse_class(body, line)
        base = bases[0] if bases else None
        rel = path if not src.gitdir else path
        entry = {"base": base, "header": rel, "source": which}
        for k in ("properties", "property_info", "signals", "slots", "invokables", "methods"):
            entry[k] = info[k]
        entry["where"] = {m: f"{rel}:{ln}" for m, ln in info["where"].items()}
        entry["conditional"] = info["conditional"]
        if cls in DECORATORS:
            entry["decorators"] = decorators(sources, cls, entry["where"])
        table[cls] = entry
        if base and cls not in STOP_AT:
            todo.append(base)
    return table


def decorators(sources: Dict[str, Source], cls: str, where: Dict[str, str]) -> List[str]:
    """The members a PythonQt decorator class adds to ``cls``, as ``name(types)`` (one entry per arity)."""
    which, header, decorator = DECORATORS[cls]
    path = sources[which].find(header)
    if path is None:
        raise SystemExit(f"{header} not found in {sources[which].describe()}")
    body, line, _bases = class_bodies(strip_comments(sources[which].read(path)))[decorator]
    slots = parse_class(body, line)
    out: List[str] = []
    for sig in slots["slots"]:
        name, params = sig.split("(", 1)
        if name.startswith(f"static_{cls}_"):
            member = f"{name[len(f'static_{cls}_') :]}({params}"
        elif params.startswith(f"{cls}*"):
            member = f"{name}({params[len(cls) + 1 :].lstrip(',')}"
        else:
            continue
        if member not in out:
            out.append(member)
            where.setdefault(member, f"{path}:{slots['where'][sig]}")
    return out


def intersect(tables: List[Dict[str, dict]]) -> Dict[str, dict]:
    """Members every configuration declares (the first configuration's ``where``); a class missing anywhere is
    dropped, and so is a property whose writability or NOTIFY signal differs."""
    out: Dict[str, dict] = {}
    first = tables[0]
    for cls, entry in first.items():
        if "error" in entry or any(cls not in t or "error" in t[cls] for t in tables[1:]):
            continue
        merged = {"base": entry["base"], "header": entry["header"], "source": entry["source"]}
        for kind in KINDS:
            if kind in entry:  # "decorators": only the classes of DECORATORS
                merged[kind] = [m for m in entry[kind] if all(m in t[cls].get(kind, []) for t in tables[1:])]
        merged["property_info"] = {
            p: entry["property_info"][p]
            for p in merged["properties"]
            if all(t[cls]["property_info"].get(p) == entry["property_info"][p] for t in tables[1:])
        }
        merged["properties"] = [p for p in merged["properties"] if p in merged["property_info"]]
        kept = {m for kind in KINDS for m in merged.get(kind, [])}
        merged["where"] = {m: w for m, w in entry["where"].items() if m in kept}
        out[cls] = merged
    return out


def dropped(tables: List[Dict[str, dict]], labels: List[str]) -> Dict[str, Dict[str, Dict[str, List[str]]]]:
    """What the intersection leaves out: class -> kind -> member -> the configurations that lack it, for every member
    some configuration declares (so a check can say *why* a member is refused, e.g. a signal Qt 6 removed)."""
    out: Dict[str, Dict[str, Dict[str, List[str]]]] = {}
    classes = sorted({c for t in tables for c, e in t.items() if "error" not in e})
    for cls in classes:
        for kind in KINDS:
            seen: List[str] = []
            for t in tables:
                seen += [m for m in t.get(cls, {}).get(kind, []) if m not in seen]
            for m in seen:
                lacking = [lb for lb, t in zip(labels, tables) if m not in t.get(cls, {}).get(kind, [])]
                if lacking:
                    out.setdefault(cls, {}).setdefault(kind, {})[m] = lacking
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slicer", required=True, help="Slicer git directory (e.g. a mirror of Slicer/Slicer)")
    ap.add_argument("--ctk", required=True, help="CTK git directory (e.g. a mirror of commontk/CTK)")
    ap.add_argument("--qt", required=True, help="Qt include directory (holding QtCore/, QtWidgets/)")
    ap.add_argument("--qt-label", required=True, help="what the Qt headers are, e.g. the Debian package and version")
    ap.add_argument("--qt6", help="Qt 6 include directory, for the Qt 6 configurations (left out: skipped)")
    ap.add_argument("--qt6-label", help="what the Qt 6 headers are (required with --qt6)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "qt_api.json"))
    args = ap.parse_args(argv)
    if args.qt6 and not args.qt6_label:
        ap.error("--qt6 needs --qt6-label")

    qts = {"qt": (Source(args.qt), args.qt_label)}
    if args.qt6:
        qts["qt6"] = (Source(args.qt6), args.qt6_label)
    tables, configurations = [], []
    for label, slicer_ref, ctk_ref, qt_key in CONFIGURATIONS:
        if qt_key not in qts:
            print(f"{label}: skipped (no --{qt_key} given)", file=sys.stderr)
            continue
        qt, qt_label = qts[qt_key]
        sources = {"slicer": Source(f"{args.slicer}@{slicer_ref}"), "ctk": Source(f"{args.ctk}@{ctk_ref}"), "qt": qt}
        table = build(sources, START)
        errors = {c: e["error"] for c, e in table.items() if "error" in e}
        if errors:
            print(f"{label}: {errors}", file=sys.stderr)
            return 1
        tables.append(table)
        configurations.append(
            {
                "label": label,
                "slicer": f"{slicer_ref} ({sources['slicer'].commit})",
                "ctk": sources["ctk"].commit,
                "qt": qt_label,
            }
        )
    merged = intersect(tables)
    meta = {
        "configurations": configurations,
        "note": "members declared in every configuration; signatures normalised as moc does (const T& -> T, names "
        "and defaults dropped), one entry per callable arity; 'methods': public non-slot member functions "
        "(PythonQt reaches those of Qt's own classes through its generated wrappers, not those of CTK/qMRML "
        "classes); 'decorators': members a Slicer PythonQt decorator adds (qSlicerCoreApplication); "
        "property_info: writable (WRITE or MEMBER) and the NOTIFY signal's name",
        "generated_by": "Testing/widget/qt_api/generate.py (see README.md there)",
        "not_in_every_configuration": dropped(tables, [c["label"] for c in configurations]),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"_meta": meta, **merged}, f, indent=1)
        f.write("\n")
    members = sum(len(e.get(k, [])) for e in merged.values() for k in KINDS)
    print(f"{len(merged)} classes, {members} members -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
