"""The panel's CPU backend choice (issue #13): the Advanced section's combo box in the parameter node, and what the
run resolved it to under it and in the status line."""

import pytest
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
    assert ui.backendInfoLabel.text.startswith("Last run: onednn (asked for; checked against PyTorch on ")
    assert " using onednn with roi " in ui.statusLabel.text
    assert "backend: onednn (asked for)" in ui.logTextEdit.plainText
    params = P.read_parameters(widget._parameterNode)
    params.backend = "torch"
    widget.logic.setParameters(params)  # the console changes it: the panel follows
    assert ui.backendComboBox.currentText == "torch"
    assert not fakeslicer.ERRORS and not fakeslicer.DIALOGS


def test_without_openvino_the_panel_runs_and_offers_it_only_on_request(slicer_app, monkeypatch, tmp_path):
    """OpenVINO and onnx are optional requirements: missing, the logic exists, Segment runs without a question, the
    label says what is missing and Install… offers them (declined: nothing changes; accepted: pip gets them)."""
    monkeypatch.setattr(dependencies, "pick_python", lambda which=None: None)  # in-process runner
    versions = {
        "torch": "2.13.0",
        "monai": "1.6.1",
        "psutil": "7.0",
        "pyyaml": "6.0",
        "nibabel": "5.3",
        "einops": "0.8",
    }
    real_check = dependencies.check

    def report(path):  # the real requirements file, read against these versions
        required = dependencies.read_requirements(path, optional=False)
        return real_check(required, versions.get, optional=dependencies.read_requirements(path, optional=True))

    asked, installed, answers = [], [], [False, True]
    monkeypatch.setattr(dependencies, "requirements_report", report)
    monkeypatch.setattr(dependencies, "slicer_confirm", lambda text, details: asked.append(text) or answers.pop(0))
    monkeypatch.setattr(dependencies, "slicer_install_torch", lambda req: pytest.fail("torch is there"))

    def pip(requirements):
        installed.append(list(requirements))
        versions.update(openvino="2026.4.1", onnx="1.17.0")

    monkeypatch.setattr(dependencies, "slicer_install_packages", pip)
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    logic = widget.logic
    assert logic is not None and ui.installDependenciesButton.visible
    assert ui.dependenciesLabel.text.endswith(" · optional openvino, onnx not installed (no OpenVINO backend)")
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((32, 28, 16))))
    ui.modelPathLineEdit.currentPath = make_model(tmp_path)
    ui.segmentButton.click()
    run_until(widget, lambda: widget.handle is None)
    assert asked == [] and "Done in" in ui.statusLabel.text  # a run: no question about optional packages
    ui.installDependenciesButton.click()  # declined: nothing installed, nothing broken
    assert len(asked) == 1 and "optional" in asked[0] and installed == [] and widget.logic is logic
    ui.installDependenciesButton.click()  # accepted: pip gets the optional packages, the same logic goes on
    assert len(asked) == 2 and installed == [["openvino>=2024.4", "onnx>=1.15"]] and widget.logic is logic
    assert not ui.installDependenciesButton.visible and "optional" not in ui.dependenciesLabel.text
    assert not fakeslicer.ERRORS and not fakeslicer.DIALOGS
