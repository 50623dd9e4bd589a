"""The fake Qt layer against the real Qt / CTK / qMRML API (Testing/widget/qt_api/qt_api.json, parsed from the headers
by qt_api/generate.py): the table itself, the fake refusing what the real classes lack, and a static pass over every
``ui.<widget>.<member>`` and signal the panel names (so code no test reaches is checked too)."""

import re
import xml.etree.ElementTree as ET

import pytest

import fakeslicer
from UNetSigmoidSegLib.widget import bindings
from widget_fixtures import LIB_DIR, MODULE_FILE, UI_FILE, slicer_app_fixture  # noqa: F401 - fixtures

UI_CLASSES = {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).getroot().iter("widget")}
PANEL_FILES = [MODULE_FILE] + [LIB_DIR / "widget" / f for f in ("panel.py", "thresholds.py", "runon.py", "selftest.py")]


def test_table_comes_from_the_headers_of_every_supported_configuration():
    meta = fakeslicer.QT_API["_meta"]
    labels = [c["label"] for c in meta["configurations"]]
    assert labels == ["Slicer 5.8.0", "Slicer 5.10.0", "Slicer main", "Slicer main on Qt 6"]
    assert all(
        re.search(r"\(([0-9a-f]{40})\)$", c["slicer"]) and re.fullmatch(r"[0-9a-f]{40}", c["ctk"])
        for c in meta["configurations"]
    )
    assert [c["qt"].split(":")[0] for c in meta["configurations"]] == ["Qt 5.15.8"] * 3 + ["Qt 6.4.2"]
    assert meta["configurations"][3]["slicer"] == meta["configurations"][2]["slicer"]  # main, on Qt 6
    assert set(UI_CLASSES.values()) - {"QWidget"} <= set(fakeslicer.QT_API), "a .ui class is missing from the table"
    combo = fakeslicer.QT_API["QComboBox"]
    assert "currentIndexChanged(int)" in combo["signals"] and combo["property_info"]["count"]["writable"] is False
    assert fakeslicer.QT_API["qMRMLNodeComboBox"]["base"] == "QWidget"
    assert "currentNodeChanged(vtkMRMLNode*)" in fakeslicer.QT_API["qMRMLNodeComboBox"]["signals"]


def test_signals_qt_6_removed_are_not_in_the_table():
    """The Qt 6 headers drop the QString overloads (Qt 6 porting guide, the same in 6.4 and 6.8): the intersection
    leaves them out, and the table says which configuration lacks them."""
    lacking = fakeslicer.QT_API["_meta"]["not_in_every_configuration"]
    removed = {
        "QComboBox": ["activated(QString)", "highlighted(QString)", "currentIndexChanged(QString)"],
        "QSpinBox": ["valueChanged(QString)"],
        "QDoubleSpinBox": ["valueChanged(QString)"],
    }
    for cls, signals in removed.items():
        for sig in signals:
            assert sig not in fakeslicer.QT_API[cls]["signals"], (cls, sig)
            assert lacking[cls]["signals"][sig] == ["Slicer main on Qt 6"], (cls, sig)
    for cls, sig in [("QComboBox", "currentTextChanged(QString)"), ("QComboBox", "textActivated(QString)")]:
        assert sig in fakeslicer.QT_API[cls]["signals"]  # the replacements, in Qt 5.15 and Qt 6


def test_notify_signals_of_the_fake_are_the_real_ones():
    for cls, props in fakeslicer.NOTIFY.items():
        for prop, signal in props.items():
            assert fakeslicer.qt_property(cls, prop)["notify"] == signal.split("(")[0], (cls, prop)
            assert fakeslicer.qt_signal(cls, signal), (cls, signal)
    assert fakeslicer.qt_property("ctkPathLineEdit", "currentPath")["writable"]
    assert fakeslicer.qt_signal("ctkPathLineEdit", "currentPathChanged(const QString&)")
    assert fakeslicer.qt_signal("ctkSliderWidget", "valueIsChanging(double)")


def test_fake_refuses_what_the_real_classes_lack(slicer_app):
    module, scene = slicer_app
    host = module.UNetSigmoidSegWidget(fakeslicer.module_panel())
    host.setup()
    ui = host.panel.ui
    with pytest.raises(AttributeError, match="no signal 'clickd\\(\\)'"):
        ui.segmentButton.connect("clickd()", lambda: None)  # PythonQt: no such signal
    with pytest.raises(AttributeError, match="no signal"):
        ui.thresholdSlider.connect("valueChanged(int)", lambda v: None)  # ctkSliderWidget's is (double)
    with pytest.raises(AttributeError, match="no signal"):
        ui.activationComboBox.connect("currentIndexChanged(QString)", lambda v: None)  # removed in Qt 6
    with pytest.raises(AttributeError, match="no property 'tooltip'"):
        ui.segmentButton.tooltip = "typo"
    with pytest.raises(AttributeError, match="no property 'name'"):
        ui.segmentButton.name = "segment"  # objectName is the Qt property
    with pytest.raises(AttributeError, match="read-only"):
        ui.activationComboBox.count = 3
    assert ui.segmentButton.objectName == "segmentButton"
    # from the module's own code: only what PythonQt offers (test code may use the fakes' helpers)
    as_module = {"__name__": "UNetSigmoidSegLib.widget.example", "ui": ui}
    for statement in ("ui.statusLabel.click()", "ui.activationComboBox.items", "ui.thresholdSlider.fire()"):
        with pytest.raises(AttributeError, match="no Qt property, signal or slot"):
            exec(statement, dict(as_module))
    exec("ui.segmentButton.click(); ui.inputSelector.currentNode(); ui.thresholdSlider.blockSignals(False)", as_module)
    assert ui.activationComboBox.items and ui.statusLabel.text == ui.statusLabel.text  # helpers stay usable in tests
    host.cleanup()


def panel_uses():
    """(class, member, where) for every ``ui.<widget>.<member>`` and ``….connect("signal")`` in the panel's files, and
    every binding's property and signal."""
    uses = []
    for path in PANEL_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for widget, member, signal in re.findall(r"\bui\.(\w+)\.(\w+)(?:\(\s*\"([^\"]+)\")?", code):
                where = f"{path.name}:{number}"
                uses.append((UI_CLASSES[widget], signal if member == "connect" else member, where))
    for _field, widget, kind in bindings.BINDINGS:
        uses.append((UI_CLASSES[widget], bindings.SIGNALS[kind], f"bindings.py SIGNALS[{kind!r}]"))
        uses.append((UI_CLASSES[widget], bindings.PROPERTY[kind], f"bindings.py PROPERTY[{kind!r}]"))
    return uses


def test_every_qt_member_the_panel_names_is_in_the_table():
    uses = panel_uses()
    assert len(uses) > 80  # 97 when written
    wrong = []
    for cls, member, where in uses:
        ok = fakeslicer.qt_signal(cls, member) if "(" in member else fakeslicer.qt_member(cls, member)
        if not ok:
            wrong.append(f"{where}: {cls}.{member}")
    assert not wrong, "not in the Qt/CTK/qMRML API (qt_api/qt_api.json):\n" + "\n".join(wrong)
