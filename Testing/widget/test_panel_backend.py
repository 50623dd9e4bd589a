"""The panel's CPU backend choice (issue #13): the Advanced section's combo box in the parameter node, and what the
run resolved it to under it and in the status line."""

from test_panel import make_model, open_panel, run_until

import fakeslicer
from conftest import blob_volume
from mrml_helpers import add_volume
from UNetSigmoidSegLib.contract.options import BACKENDS
from UNetSigmoidSegLib.mrml import parameters as P
from UNetSigmoidSegLib.widget import dependencies
from widget_fixtures import slicer_app_fixture  # noqa: F401 - fixture


def test_backend_choice_is_saved_used_and_reported(slicer_app, monkeypatch, tmp_path):
    monkeypatch.setattr(dependencies, "pick_python", lambda which=None: None)  # in-process runner
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert ui.backendComboBox.items == list(BACKENDS) and all(ui.backendComboBox.tips.values())
    assert ui.backendComboBox.currentText == "auto" and ui.backendInfoLabel.text == ""
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((32, 28, 16))))
    ui.deviceComboBox.currentText = "cpu"
    ui.backendComboBox.currentText = "onednn"
    assert P.read_parameters(widget._parameterNode).backend == "onednn"
    ui.modelPathLineEdit.currentPath = make_model(tmp_path)
    ui.segmentButton.click()
    run_until(widget, lambda: widget.handle is None)
    assert ui.backendInfoLabel.text == "Last run: onednn (asked for)"
    assert " using onednn with roi " in ui.statusLabel.text
    assert "backend: onednn (asked for)" in ui.logTextEdit.plainText
    params = P.read_parameters(widget._parameterNode)
    params.backend = "torch"
    widget.logic.setParameters(params)  # the console changes it: the panel follows
    assert ui.backendComboBox.currentText == "torch"
    assert not fakeslicer.ERRORS and not fakeslicer.DIALOGS
