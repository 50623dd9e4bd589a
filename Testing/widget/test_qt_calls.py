"""The signature-aware check of the module's Qt / CTK / qMRML calls (``qt_calls.py``): it catches swapped arguments,
wrong arities, keyword arguments, signals Qt 6 removed and wrongly typed property writes in small sources, and the
module's own Qt wiring passes it. What it could not type is counted and printed (``pytest -s``)."""

import textwrap

import pytest

import qt_calls
from qt_calls import check_sources, signal_problem
from UNetSigmoidSegLib.widget import bindings, rules


def errors_of(source):
    return check_sources({"example.py": textwrap.dedent(source)}).errors


def test_the_module_passes_and_its_calls_are_checked_not_skipped():
    report = qt_calls.check_module()
    assert not report.errors, "\n".join(report.errors)
    names = [p.name for p in qt_calls.qt_sources()]
    assert {"UNetSigmoidSeg.py", "panel.py", "thresholds.py", "runon.py", "bindings.py", "selftest.py"} <= set(names)
    # the calls this check exists for are reached (typing through aliases, loops over widgets, .ui layouts, self.*)
    for label in (
        "QComboBox.setItemData",
        "QComboBox.addItem",
        "QFileDialog.getExistingDirectory",
        "QFormLayout.addRow",
        "QFormLayout.removeRow",
        "QTimer.setInterval",
        "ctkSliderWidget.ctkSliderWidget",
        "qMRMLNodeComboBox.setCurrentNode",
        "qMRMLTableView.setMRMLTableNode",
        "qMRMLWidget.setMRMLScene",
        "QLineEdit.blockSignals",
        "ctkSliderWidget.decimals=",
        "QComboBox.connect(currentIndexChanged(int))",
    ):
        assert report.checked[label], label
    assert sum(report.checked.values()) > 100  # 127 when written
    skipped = sum(report.skipped.values())
    print(f"\nchecked {sum(report.checked.values())} Qt calls / writes / connects; skipped {skipped}:")
    print(dict(report.skipped))
    print("\n".join(report.unknown))
    assert skipped == len(report.unknown)


def test_swapped_arguments_fail():
    # the tooltip first and the index second: PythonQt finds no setItemData(int, QVariant, int) taking a str index
    wrong = errors_of("""
        import qt
        def fill(ui):
            combo = ui.activationComboBox
            for value, tip in (("sigmoid", "one probability per channel"),):
                combo.addItem(value)
                combo.setItemData(tip, combo.count - 1, qt.Qt.ToolTipRole)
    """)
    assert len(wrong) == 1 and "example.py:7: QComboBox.setItemData(str, int, enum)" in wrong[0], wrong
    assert "QComboBox::setItemData(int,QVariant,int) (2..3 arguments)" in wrong[0]
    # the same with the tips of a project constant (read by importing rules): still caught
    wrong = errors_of("""
        import qt
        from . import rules
        def fill(ui):
            for value, tip in rules.ACTIVATIONS:
                ui.activationComboBox.setItemData(tip, ui.activationComboBox.count - 1, qt.Qt.ToolTipRole)
    """)
    assert len(wrong) == 1 and "setItemData(str, int, enum)" in wrong[0], wrong
    assert isinstance(rules.ACTIVATIONS[0][1], str)
    right = errors_of("""
        import qt
        from . import rules
        def fill(ui, role):
            for value, tip in rules.ACTIVATIONS:
                ui.activationComboBox.addItem(value)
                ui.activationComboBox.setItemData(ui.activationComboBox.count - 1, tip, qt.Qt.ToolTipRole)
                ui.activationComboBox.setItemData(0, tip)  # role defaults to Qt::UserRole
                ui.activationComboBox.setItemData(0, tip, role)  # an argument of unknown type is accepted
    """)
    assert right == []


def test_a_swap_in_the_real_sources_is_caught():
    sources = {p.name: p.read_text(encoding="utf-8") for p in qt_calls.qt_sources()}
    swaps = {
        "bindings.py": ("combo.setItemData(combo.count - 1, tip, tooltip_role)", "combo.setItemData(tip, 0)"),
        # (RUN_ON_CHOICES is a constant; fillModels' tips come from a function's result: not typed, not caught)
        "runon.py": ("ui.runOnComboBox.count - 1, tip, qt.Qt.ToolTipRole", "tip, 0"),
        "thresholds.py": ("box.layout().removeRow(0)", "box.layout().removeRow()"),
    }
    for name, (right, wrong) in swaps.items():
        assert sources[name].count(right) == 1, (name, right)
        sources[name] = sources[name].replace(right, wrong)
    found = check_sources(sources).errors
    assert len(found) == 3, found
    assert "bindings.py:" in found[0] and "QComboBox.setItemData(str, int)" in found[0]
    assert "runon.py:" in found[1] and "QComboBox.setItemData(str, int)" in found[1]
    assert "thresholds.py:" in found[2] and "QFormLayout.removeRow()" in found[2]


@pytest.mark.parametrize(
    "call, expected",
    [
        ("ui.activationComboBox.setItemData(0)", "setItemData(int) matches no overload"),
        ("ui.activationComboBox.setItemData(0, 'tip', 3, 4)", "setItemData(int, str, int, int) matches no"),
        ("ui.segmentButton.click(True)", "QPushButton.click(bool) matches no overload"),
        ("ui.inputSelector.setCurrentNode()", "qMRMLNodeComboBox.setCurrentNode() matches no overload"),
        ("ui.outputSelector.currentNode(0)", "qMRMLNodeComboBox.currentNode(int) matches no overload"),
        ("qt.QFileDialog.getExistingDirectory(None, 'a', 'b', 0, 5)", "getExistingDirectory(none, str, str"),
        ("qt.QTimer().setInterval('100')", "QTimer.setInterval(str) matches no overload"),
        ("ui.statusLabel.setText('x', 2)", "QLabel.setText(str, int) matches no overload"),
        ("ui.activationComboBox.setItemData(index=0, value='x')", "PythonQt passes no keyword arguments"),
        ("ui.activationComboBox.count()", "a property, not callable"),
        ("ui.statusLabel.setTextt('x')", "no such signal, slot or method"),
        ("ctk.ctkSliderWidget(decimalz=2)", "ctkSliderWidget(decimalz=…): not a writable property"),
        ("ui.segmentThresholdsGroupBox.layout().addRow()", "QFormLayout.addRow() matches no overload"),
    ],
)
def test_wrong_arity_or_types_fail(call, expected):
    wrong = errors_of(f"import ctk, qt\n\ndef f(ui):\n    {call}\n")
    assert len(wrong) == 1 and expected in wrong[0], wrong


def test_signals_must_exist_in_qt_5_15_and_qt_6():
    source = """
        def wire(ui, slot):
            ui.activationComboBox.connect("currentIndexChanged(int)", slot)
            ui.activationComboBox.connect("currentIndexChanged(QString)", slot)
            ui.activationComboBox.connect("activated(const QString&)", slot)
            ui.swBatchSizeSpinBox.connect("valueChanged(QString)", slot)
            ui.modelPathLineEdit.connect("currentPathChanged(const QString&)", slot)
            ui.segmentButton.connect("clickd()", slot)
            ui.segmentButton.connect("clicked()")
    """
    wrong = errors_of(source)
    assert [w.split(":")[1] for w in wrong] == ["4", "5", "6", "8", "9"], wrong
    assert "QComboBox::currentIndexChanged(QString) is not declared in Slicer main on Qt 6" in wrong[0]
    assert "QComboBox::activated(QString) is not declared in Slicer main on Qt 6" in wrong[1]
    assert "QSpinBox::valueChanged(QString) is not declared in Slicer main on Qt 6" in wrong[2]
    assert "QPushButton has no signal 'clickd()'" in wrong[3] and "takes 2 or 3 positional arguments" in wrong[4]
    # the bindings' signals (looked up through a table the static pass cannot follow) are checked here
    ui_classes = qt_calls.UI_CLASSES
    problems = [signal_problem(ui_classes[w], bindings.SIGNALS[k]) for _f, w, k in bindings.BINDINGS]
    assert problems == [None] * len(bindings.BINDINGS)
    assert signal_problem("QComboBox", "currentTextChanged(QString)") is None  # Qt 6's replacement


def test_property_writes_and_reads_are_checked():
    wrong = errors_of("""
        def show(ui, anything):
            ui.progressBar.value = "50"
            ui.progressBar.value = 50.0
            ui.activationComboBox.count = 3
            ui.statusLabel.txt = "typo"
            ui.thresholdSlider.value = anything
            ui.statusLabel.text = 5  # PythonQt converts anything to a QString
            ui.segmentButton.enabled = None  # and anything to a bool
            return ui.statusLabel.textt, ui.noSuchWidget
    """)
    assert [w.split(":")[1] for w in wrong] == ["3", "5", "6", "10", "10"], wrong
    assert "QProgressBar.value = <str>: the property takes int" in wrong[0]
    assert "read-only" in wrong[1] and "no property 'txt'" in wrong[2]
    assert "QLabel.textt: no property, signal, slot or method" in wrong[3] and "ui.noSuchWidget" in wrong[4]


def test_unknown_receivers_are_counted_not_checked():
    report = check_sources(
        {
            "example.py": textwrap.dedent("""
                import os
                def f(host, ui):
                    host.layout.addWidget("not checked")
                    os.path.join("a", "b")
                    icon = qt.QIcon("a.png")
                    ui.segmentButton.setText(1)
            """)
        }
    )
    assert report.errors == []  # setText(QString) takes an int (PythonQt's str())
    assert report.skipped == {"receiver of unknown type": 1, "class not in qt_api.json": 1}
    assert report.unknown[0] == "example.py:4: host.layout.addWidget(…)"
    assert report.checked["QPushButton.setText"] == 1
