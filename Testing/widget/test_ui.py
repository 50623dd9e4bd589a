"""Static checks of Resources/UI/UNetSigmoidSeg.ui against the Python that drives it (no Qt needed)."""

import ast
import re

import pytest

from UNetSigmoidSegLib.mrml.parameters import RANGES, Parameters
from UNetSigmoidSegLib.widget import bindings, rules
from widget_fixtures import (
    LIB_DIR,
    MODULE_FILE,
    ui_tree_fixture,  # noqa: F401 - fixture
)

# Widget classes that 3D Slicer's own Designer files use, with the <customwidget> header they declare.
# Source: Slicer/Slicer main @ 583e9b37d50e (2026-08-21), all 142 *.ui files — `<widget class=…>` and
# `<customwidget>` entries (e.g. Utilities/Templates/Modules/Scripted/Resources/UI/TemplateKey.ui,
# Modules/Loadable/Tables/Resources/UI/qSlicerTablesModuleWidget.ui for qMRMLTableView).
QT_CLASSES = {
    "QWidget",
    "QLabel",
    "QCheckBox",
    "QPushButton",
    "QToolButton",
    "QLineEdit",
    "QComboBox",
    "QSpinBox",
    "QDoubleSpinBox",
    "QRadioButton",
    "QGroupBox",
    "QFrame",
    "QProgressBar",
    "QPlainTextEdit",
    "QTextEdit",
    "QTextBrowser",
    "QTableWidget",
    "QTableView",
    "QListWidget",
    "QTabWidget",
    "QStackedWidget",
    "QScrollArea",
    "QSlider",
}
CUSTOM_CLASSES = {  # class: (extends, header)
    "qMRMLWidget": ("QWidget", "qMRMLWidget.h"),
    "qSlicerWidget": ("QWidget", "qSlicerWidget.h"),
    "qMRMLNodeComboBox": ("QWidget", "qMRMLNodeComboBox.h"),
    "qMRMLTableView": ("QTableView", "qMRMLTableView.h"),
    "qMRMLSpinBox": ("ctkDoubleSpinBox", "qMRMLSpinBox.h"),
    "qMRMLCollapsibleButton": ("ctkCollapsibleButton", "qMRMLCollapsibleButton.h"),
    "qMRMLSegmentsTableView": ("qMRMLWidget", "qMRMLSegmentsTableView.h"),
    "ctkCollapsibleButton": ("QWidget", "ctkCollapsibleButton.h"),
    "ctkCollapsibleGroupBox": ("QGroupBox", "ctkCollapsibleGroupBox.h"),
    "ctkSliderWidget": ("QWidget", "ctkSliderWidget.h"),
    "ctkPathLineEdit": ("QWidget", "ctkPathLineEdit.h"),
    "ctkDoubleSpinBox": ("QWidget", "ctkDoubleSpinBox.h"),
    "ctkComboBox": ("QComboBox", "ctkComboBox.h"),
    "ctkCheckBox": ("QCheckBox", "ctkCheckBox.h"),
    "ctkExpandButton": ("QToolButton", "ctkExpandButton.h"),
    "ctkFittedTextBrowser": ("QTextBrowser", "ctkFittedTextBrowser.h"),
}
NEEDS_SCENE = {"qMRMLNodeComboBox", "qMRMLTableView", "qMRMLSpinBox", "qMRMLSegmentsTableView"}
INTERACTIVE = {
    "qMRMLNodeComboBox",
    "ctkPathLineEdit",
    "ctkSliderWidget",
    "QComboBox",
    "QCheckBox",
    "QPushButton",
    "QToolButton",
    "QSpinBox",
    "QDoubleSpinBox",
    "QLineEdit",
    "ctkComboBox",
    "ctkCheckBox",
    "ctkDoubleSpinBox",
    "qMRMLSpinBox",
}
READS = r"(currentNode\(\)|(currentPath|value|checked|currentText|text)\b)"


def widgets(tree):
    return {w.get("name"): w for w in tree.iter("widget")}


def prop(widget, name):
    p = widget.find(f"property[@name='{name}']")
    return None if p is None else list(p)[0]


def python_sources():
    """The module file, the panel, its live thresholds, its Run-on group and the self-test: the Python that reaches
    into ``ui``."""
    widget = LIB_DIR / "widget"
    files = ("panel.py", "thresholds.py", "runon.py", "selftest.py")
    return "".join(p.read_text() for p in [MODULE_FILE] + [widget / f for f in files])


def used_names():
    return set(re.findall(r"\bui\.(\w+)", python_sources())) | {name for _, name, _ in bindings.BINDINGS}


def test_ui_parses_with_the_module_class_as_top_widget(ui_tree):
    root = ui_tree.getroot()
    assert root.tag == "ui" and root.get("version") == "4.0" and root.findtext("class") == "UNetSigmoidSeg"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "UNetSigmoidSeg")
    names = [w.get("name") for w in ui_tree.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique (childWidgetVariables maps them to attributes)"


def test_every_class_is_a_real_qt_ctk_or_slicer_widget_with_its_slicer_header(ui_tree):
    declared = {
        c.findtext("class"): (c.findtext("extends"), c.findtext("header")) for c in ui_tree.iter("customwidget")
    }
    used = {w.get("class") for w in ui_tree.iter("widget")}
    assert used <= QT_CLASSES | set(CUSTOM_CLASSES), used - QT_CLASSES - set(CUSTOM_CLASSES)
    for cls in used - QT_CLASSES:
        assert declared.get(cls) == CUSTOM_CLASSES[cls], (
            f"<customwidget> of {cls} must match Slicer's: {CUSTOM_CLASSES[cls]}"
        )
    assert set(declared) <= used, f"declared but unused: {set(declared) - used}"
    for layout in ui_tree.iter("layout"):
        assert layout.get("class") in {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}


def test_mrml_widgets_get_the_scene_as_the_template_wires_it(ui_tree):
    wired = {
        c.findtext("receiver")
        for c in ui_tree.iter("connection")
        if (c.findtext("sender"), c.findtext("signal"), c.findtext("slot"))
        == ("UNetSigmoidSeg", "mrmlSceneChanged(vtkMRMLScene*)", "setMRMLScene(vtkMRMLScene*)")
    }
    need = {name for name, w in widgets(ui_tree).items() if w.get("class") in NEEDS_SCENE}
    assert need and need == wired


def test_every_widget_the_python_uses_exists_in_the_ui(ui_tree):
    missing = used_names() - set(widgets(ui_tree))
    assert not missing, f"used in Python but not in the .ui: {sorted(missing)}"


def test_every_interactive_widget_in_the_ui_is_wired(ui_tree):
    src, bound = python_sources(), {name for _, name, _ in bindings.BINDINGS}
    for name, w in widgets(ui_tree).items():
        if w.get("class") not in INTERACTIVE or name in bound:
            continue
        connected = re.search(rf"ui\.{name}\.connect\(", src)
        read = re.search(rf"ui\.{name}\.{READS}", src)
        assert connected, f"{name} ({w.get('class')}) is never connected"
        if w.get("class") not in {"QPushButton", "QToolButton"}:
            assert read, f"{name} ({w.get('class')}) is connected but never read"


def test_bindings_cover_every_parameter_and_use_real_signals(ui_tree):
    fields = set(Parameters.__dataclass_fields__)
    bound = [f for f, _, _ in bindings.BINDINGS]
    assert len(bound) == len(set(bound)) and set(bound) | set(bindings.EXPLICIT_FIELDS) == fields
    kinds = {
        "path": {"ctkPathLineEdit"},
        "combo": {"QComboBox"},
        "check": {"QCheckBox"},
        "double": {"QDoubleSpinBox", "ctkSliderWidget"},
        "int": {"QSpinBox"},
        "roi": {"QLineEdit"},
        "window": {"QLineEdit"},
    }
    ws = widgets(ui_tree)
    for field, name, kind in bindings.BINDINGS:
        assert ws[name].get("class") in kinds[kind], (field, name, kind)


def test_threshold_slider_is_0_to_1_in_steps_of_0_01_and_reports_drags(ui_tree):
    slider = widgets(ui_tree)["thresholdSlider"]
    assert slider.get("class") == "ctkSliderWidget"
    values = {n: float(prop(slider, n).text) for n in ("minimum", "maximum", "singleStep", "value")}
    assert values == {"minimum": 0.0, "maximum": 1.0, "singleStep": 0.01, "value": 0.5}
    assert (
        prop(slider, "tracking").text == "false"
    )  # valueIsChanging while dragging (debounced live), valueChanged on release
    assert int(prop(slider, "decimals").text) == 2


def test_spin_box_ranges_match_the_parameter_ranges(ui_tree):
    ws = widgets(ui_tree)
    for field, name in (
        ("overlap", "overlapSpinBox"),
        ("swBatchSize", "swBatchSizeSpinBox"),
        ("minIslandMm3", "minIslandSpinBox"),
    ):
        lo, hi = RANGES[field]
        minimum = prop(ws[name], "minimum")
        assert float(minimum.text if minimum is not None else 0) == lo, name
        assert float(prop(ws[name], "maximum").text) == hi, name
        default = getattr(Parameters(), field)
        value = prop(ws[name], "value")
        assert float(value.text if value is not None else 0) == default, name


def test_checkbox_defaults_match_the_parameters(ui_tree):
    ws, defaults = widgets(ui_tree), Parameters()
    for field, name, kind in bindings.BINDINGS:
        if kind == "check":
            checked = prop(ws[name], "checked")
            assert (checked is not None and checked.text == "true") == getattr(defaults, field), name


def test_output_selector_offers_create_new_and_log_is_capped(ui_tree):
    ws = widgets(ui_tree)
    out = ws["outputSelector"]
    assert [s.text for s in prop(out, "nodeTypes")] == ["vtkMRMLSegmentationNode"]
    assert prop(out, "noneEnabled").text == "true" and prop(out, "noneDisplay").text == "Create new"
    assert [s.text for s in prop(ws["inputSelector"], "nodeTypes")] == ["vtkMRMLScalarVolumeNode"]
    assert 100 <= int(prop(ws["logTextEdit"], "maximumBlockCount").text) <= 10000
    assert prop(ws["logTextEdit"], "readOnly").text == "true"
    for name in ("advancedCollapsibleButton", "cleanupCollapsibleButton", "logCollapsibleButton"):
        assert prop(ws[name], "collapsed").text == "true"


def test_combo_values_are_the_engines():
    from monai.utils import BlendMode

    from UNetSigmoidSegLib.contract.options import ACTIVATIONS, DEVICES, SegmentOptions
    from UNetSigmoidSegLib.engine.running.inference import select_device
    from UNetSigmoidSegLib.errors import OptionError

    assert tuple(v for v, _ in rules.DEVICES) == DEVICES  # one source: the run contract's vocabulary
    assert tuple(v for v, _ in rules.ACTIVATIONS) == ACTIVATIONS
    for device in DEVICES:  # the engine knows every device the panel offers (it may be absent on this machine)
        try:
            select_device(device)
        except OptionError as exc:
            assert "not available" in exc.message, exc.message
    assert [SegmentOptions(activation=a).activation for a in ACTIVATIONS] == list(ACTIVATIONS)
    assert {v for v, _ in rules.BLEND_MODES} <= {m.value for m in BlendMode}
    assert all(tip.strip() for _, tip in rules.DEVICES + rules.ACTIVATIONS + rules.BLEND_MODES)


@pytest.mark.parametrize(
    "name",
    [
        "installDependenciesButton",
        "segmentButton",
        "modelPathLineEdit",
        "trustBundleCheckBox",
        "deviceComboBox",
        "activationComboBox",
        "thresholdSlider",
    ],
)
def test_important_widgets_have_tooltips(ui_tree, name):
    tip = prop(widgets(ui_tree)[name], "toolTip")
    assert tip is not None and len(tip.text) > 20


def test_module_file_reads_no_widget_attribute_that_is_not_a_known_property():
    """A misspelt Qt property (``tooltip``) would silently create a Python attribute under PythonQt: the fake
    widgets of test_panel reject them at run time; here the assignments in the source are checked too."""
    tree = ast.parse(MODULE_FILE.read_text())
    allowed = {
        "text",
        "enabled",
        "toolTip",
        "visible",
        "value",
        "decimals",
        "singleStep",
        "minimum",
        "maximum",
        "tracking",
        "currentPath",
        "currentText",
        "checked",
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Attribute)
                        and isinstance(t.value.value, ast.Attribute)
                        and t.value.value.attr == "ui"
                    ):
                        assert t.attr in allowed, f"line {node.lineno}: ui.{t.value.attr}.{t.attr}"


def test_the_panel_says_research_use_not_clinical_use(ui_tree):
    from UNetSigmoidSegLib import NOT_CLINICAL

    assert prop(widgets(ui_tree)["noticeLabel"], "text").text == NOT_CLINICAL
    module = MODULE_FILE.read_text(encoding="utf-8")
    assert "Research use — not for clinical use" in module  # the module's help text
