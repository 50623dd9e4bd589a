"""The module file's wiring, run over fake Qt widgets built from the .ui, a real slicer-core scene, the real
logic, and (one test) the real background worker started through a ``PythonSlicer`` on PATH.

What only the Slicer application can show (rendering, real Qt signal dispatch, the PyTorch extension) is
left to the in-Slicer self-test (UNetSigmoidSegLib/widget/selftest.py)."""

import os
import sys
import time

import pytest
import torch

import fakeslicer
from conftest import blob_volume, tiny_unet
from mrml_helpers import add_volume
from UNetSigmoidSegLib.mrml import parameters as P
from UNetSigmoidSegLib.widget import dependencies, resources
from widget_fixtures import MODULE_DIR, python_slicer_fixture, slicer_app_fixture  # noqa: F401 - fixtures (the import puts Testing/mrml on sys.path)


def make_model(tmp_path, out_channels=2, seed=5):
    path = tmp_path / f"unet{out_channels}.pt"
    torch.save(tiny_unet(out_channels=out_channels, seed=seed).state_dict(), path)
    return str(path)


def open_panel(slicer_app):
    """The module widget set up as Slicer does; returns its panel (``panel.host`` is the module widget)."""
    module, scene = slicer_app
    host = module.UNetSigmoidSegWidget(fakeslicer.module_panel())
    host.setup()
    assert host.logic is host.panel.logic  # what slicer.util.getModuleLogic returns
    return module, scene, host.panel


def run_until(widget, condition, timeout_s=120.0):
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        if widget.pollTimer.active:
            widget.pollTimer.fire()
        time.sleep(0.02)


def voxels(widget, seg):
    return [s["voxels"] for s in widget.logic.statistics(seg)]


def assert_clean():
    assert not fakeslicer.ERRORS, "\n".join(fakeslicer.ERRORS)
    assert not fakeslicer.DIALOGS, fakeslicer.DIALOGS


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(
        dependencies, "pick_python", lambda which=None: None
    )  # no PythonSlicer: the in-process fallback


def test_setup_fills_the_panel_and_waits_for_inputs(slicer_app, in_process):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert ui.activationComboBox.items == ["auto", "sigmoid", "softmax", "none"] and all(
        ui.activationComboBox.tips.values()
    )
    assert ui.deviceComboBox.items == ["auto", "cuda", "cpu", "mps"] and ui.blendModeComboBox.currentText == "gaussian"
    assert not ui.segmentButton.enabled and ui.segmentButton.toolTip == "Select an input volume."
    assert ui.dependenciesLabel.text.startswith("torch ") and "MONAI" in ui.dependenciesLabel.text
    assert not ui.installDependenciesButton.visible and not ui.segmentThresholdsGroupBox.visible
    assert "Slicer's process" in ui.logTextEdit.plainText  # says why there is no worker
    assert P.get_parameter_node(scene, create=False) is widget._parameterNode
    assert module.UNetSigmoidSegLogic is type(widget.logic)  # console re-export
    assert_clean()


def test_panel_state_lives_in_the_parameter_node(slicer_app, in_process, tmp_path):
    module, scene, widget = open_panel(slicer_app)
    ui, node = widget.ui, widget._parameterNode
    vol = add_volume(scene, blob_volume((20, 18, 12)))
    ui.inputSelector.setCurrentNode(vol)
    ui.fillHolesCheckBox.checked = True
    ui.overlapSpinBox.value = 0.5
    ui.deviceComboBox.currentText = "cpu"
    ui.roiSizeLineEdit.text = "64, 64, 32"
    ui.roiSizeLineEdit.emit("editingFinished()")
    p = P.read_parameters(node)
    assert (p.fillHoles, p.overlap, p.device, p.roiSize) == (True, 0.5, "cpu", [64, 64, 32])
    assert P.get_reference(node, "InputVolume") is vol
    p.activation, p.swBatchSize, p.keepWorkerWarm = "softmax", 4, False
    widget.logic.setParameters(p)  # the console changes it: the panel follows
    assert (ui.activationComboBox.currentText, ui.swBatchSizeSpinBox.value, ui.keepWorkerWarmCheckBox.checked) == (
        "softmax",
        4,
        False,
    )
    assert_clean()


def test_segment_then_debounced_live_threshold(slicer_app, in_process, tmp_path):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    vol = add_volume(scene, blob_volume((32, 28, 16)))
    ui.inputSelector.setCurrentNode(vol)
    ui.deviceComboBox.currentText = "cpu"
    ui.activationComboBox.currentText = "sigmoid"
    ui.modelPathLineEdit.currentPath = make_model(tmp_path)
    assert ui.modelSummaryLabel.text.startswith("checkpoint: UNet") and "1→2 channels" in ui.modelSummaryLabel.text
    # sigmoid on 2 channels the model does not record as labels: asked beside the summary, Segment waits for it
    assert not ui.segmentButton.enabled and "Independent labels" in ui.segmentButton.toolTip
    assert ui.modelQuestionLabel.visible and "channel 0 is the background" in ui.modelQuestionLabel.text
    ui.multiLabelCheckBox.checked = True
    assert ui.segmentButton.enabled and ui.segmentButton.text == "Segment"
    # the unrecorded normalisation is asked too, without blocking (the engine refuses only raw intensities)
    assert (
        ui.modelQuestionLabel.visible and "does not record how its input was normalised" in ui.modelQuestionLabel.text
    )
    ui.normalizationComboBox.currentText = "ct"
    assert not ui.segmentButton.enabled and "needs a window" in ui.modelQuestionLabel.text
    ui.normalizationComboBox.currentText = "none"
    assert not ui.modelQuestionLabel.visible and ui.segmentButton.enabled
    ui.segmentButton.click()
    assert widget.handle is not None and ui.segmentButton.text == "Cancel" and widget.pollTimer.active
    run_until(widget, lambda: widget.handle is None)
    seg = ui.outputSelector.currentNode()
    assert seg is not None and seg.GetSegmentation().GetNumberOfSegments() == 2
    assert ui.statusLabel.text.startswith("Done in") and ui.progressBar.value == 100
    assert " with roi " in ui.statusLabel.text and ", overlap " in ui.statusLabel.text  # the window used (issue #12)
    assert ui.segmentThresholdsGroupBox.visible and len(widget._sliders) == 2
    assert ui.statisticsTableView.tableNode is widget.logic.liveResult(seg).table
    assert "device: cpu" in ui.logTextEdit.plainText  # engine log lines reach the panel through the tapped runner
    assert P.read_parameters(widget._parameterNode).recentModels == [ui.modelPathLineEdit.currentPath]
    before = voxels(widget, seg)

    calls = []
    real = widget.logic.setThreshold
    widget.logic.setThreshold = lambda node, t, cleanup=True, update3D=True: (
        calls.append((list(t), cleanup, update3D)) or real(node, t, cleanup=cleanup, update3D=update3D)
    )
    rebuilt = []
    real_surface = widget.logic.updateSurface
    widget.logic.updateSurface = lambda node: rebuilt.append(node) or real_surface(node)
    for value in (0.45, 0.4, 0.3, 0.25):  # a drag: many events, the timer started once
        ui.thresholdSlider.emit("valueIsChanging(double)", value)
    assert widget.thresholdTimer.active and calls == []
    widget.thresholdTimer.fire()
    assert calls == [([0.25, 0.25], False, False)]  # the newest value, live: no clean-up, no 3-D rebuild
    assert [s.value for s in widget._sliders] == [0.25, 0.25]
    ui.thresholdSlider.value = 0.25  # release at the same value: committed once, with clean-up and the 3-D surface
    assert calls[-1] == ([0.25, 0.25], True, True) and len(calls) == 2 and rebuilt == []
    after = voxels(widget, seg)
    assert all(a >= b for a, b in zip(after, before)) and after != before
    assert P.read_parameters(widget._parameterNode).threshold == 0.25

    seg.CreateClosedSurfaceRepresentation()  # Show 3D
    ui.thresholdSlider.emit("valueIsChanging(double)", 0.6)
    widget.thresholdTimer.fire()
    ui.thresholdSlider.emit("valueIsChanging(double)", 0.25)  # dragged back to the committed value
    widget.thresholdTimer.fire()
    assert calls[-2:] == [([0.6, 0.6], False, False), ([0.25, 0.25], False, False)]
    assert widget.logic.liveResult(seg).writer.surface_stale  # the 3-D surface still shows 0.6
    ui.thresholdSlider.emit("valueChanged(double)", 0.25)  # released where it was: nothing to re-threshold …
    assert len(calls) == 4 and rebuilt == [seg] and not widget.logic.liveResult(seg).writer.surface_stale  # … 3-D
    widget._sliders[1].value = 0.9  # one segment's own slider (released)
    assert calls[-1] == ([0.25, 0.9], True, True)
    assert P.read_parameters(widget._parameterNode).segmentThresholds == [0.25, 0.9]
    assert voxels(widget, seg)[0] == after[0] and voxels(widget, seg)[1] <= after[1]
    p = P.read_parameters(widget._parameterNode)
    p.threshold = 0.7
    widget.logic.setParameters(p)  # a parameter change from the console is not a drag: nothing re-thresholded
    assert not widget.thresholdTimer.active and calls[-1] == ([0.25, 0.9], True, True)
    ui.showHistogramButton.click()
    assert fakeslicer.PlotsLogic.shown == [widget.logic.liveResult(seg).plot[0]]
    assert_clean()


def test_invalid_inputs_disable_segment_or_explain(slicer_app, in_process, tmp_path):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((16, 16, 8))))
    ui.modelPathLineEdit.currentPath = str(tmp_path / "missing.pt")
    assert not ui.segmentButton.enabled and "Model not found" in ui.segmentButton.toolTip
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    ui.modelPathLineEdit.currentPath = str(bad)
    assert not ui.segmentButton.enabled and ui.segmentButton.toolTip == ui.modelSummaryLabel.text != ""
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    assert ui.segmentButton.enabled
    ui.modelPathLineEdit.currentPath = ""  # cleared: CTK's validator rejects "", only validInputChanged is emitted
    assert not ui.segmentButton.enabled and "Select a model" in ui.segmentButton.toolTip
    assert P.read_parameters(widget._parameterNode).modelPath == ""
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    ui.roiSizeLineEdit.text = "ninety-six"
    ui.segmentButton.click()
    assert widget.handle is None and len(fakeslicer.DIALOGS) == 1
    assert (
        "ROI size 'ninety-six' is not understood" in fakeslicer.DIALOGS[0]
        and "three positive integers" in fakeslicer.DIALOGS[0]
    )
    assert not fakeslicer.ERRORS  # a user error is shown, not printed as a traceback


def test_refused_install_leaves_a_message_and_a_working_panel(slicer_app, in_process, monkeypatch, tmp_path):
    report = dependencies.check(["monai>=1.3"], version_of=lambda name: None)
    monkeypatch.setattr(dependencies, "requirements_report", lambda path: report)
    asked = []
    monkeypatch.setattr(dependencies, "slicer_confirm", lambda text, details: asked.append(text) or False)
    monkeypatch.setattr(dependencies, "slicer_install_torch", lambda req: pytest.fail("installed without consent"))
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert widget.logic is None and ui.installDependenciesButton.visible
    assert ui.dependenciesLabel.text.startswith("Missing: torch>=2.1 (not installed), monai>=1.3")
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((16, 16, 8))))
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    assert ui.modelSummaryLabel.text == "Install the dependencies to read the model."
    assert ui.segmentButton.enabled and "asked before anything is installed" in ui.segmentButton.toolTip
    ui.segmentButton.click()
    assert len(asked) == 1 and "PyTorch extension" in asked[0]
    assert widget.logic is None and widget.handle is None
    assert (
        len(fakeslicer.DIALOGS) == 1
        and "Nothing was installed" in fakeslicer.DIALOGS[0]
        and "PyTorch Utils" in fakeslicer.DIALOGS[0]
    )
    assert not fakeslicer.ERRORS
    ui.installDependenciesButton.click()  # asks again, still refused: nothing breaks
    assert len(asked) == 2 and widget.logic is None and not fakeslicer.ERRORS


@pytest.mark.slow
def test_worker_runs_cancels_and_leaves_no_process(slicer_app, python_slicer, tmp_path):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert widget.runner is not None and widget.runner.python_executable == python_slicer and widget.pollTimer.active
    run_until(widget, lambda: not widget.pollTimer.active)  # polls until the worker's hello
    assert widget.runner.hello is not None
    assert "CUDA: not available" in ui.dependenciesLabel.text and "worker Python" in ui.dependenciesLabel.text
    assert ui.deviceInfoLabel.text.startswith("→ CPU")
    vol = add_volume(scene, blob_volume((32, 28, 16)))
    ui.inputSelector.setCurrentNode(vol)
    ui.deviceComboBox.currentText = "cpu"
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    assert widget.summaries.inspecting and not ui.segmentButton.enabled  # the worker reads the model
    run_until(widget, lambda: not widget.summaries.inspecting)
    assert ui.modelSummaryLabel.text.startswith("checkpoint: UNet") and ui.segmentButton.enabled
    ui.segmentButton.click()
    run_until(widget, lambda: widget.handle is None)
    seg = ui.outputSelector.currentNode()
    assert seg is not None and seg.GetSegmentation().GetNumberOfSegments() == 1, fakeslicer.ERRORS
    assert "cpu" in ui.statusLabel.text and not ui.segmentThresholdsGroupBox.visible
    pid = widget.runner.pid
    assert pid is not None  # warm: the worker stays for the next run

    ui.segmentButton.click()  # again, then Cancel
    ui.segmentButton.click()
    assert ui.segmentButton.text == "Cancelling…" and not ui.segmentButton.enabled
    run_until(widget, lambda: widget.handle is None)
    assert ui.statusLabel.text.startswith("cancelled") and ui.segmentButton.text == "Segment"
    assert not fakeslicer.DIALOGS  # a cancel is not an error

    widget.cleanup()  # module closed or reloaded
    assert widget.runner is None and not widget.pollTimer.active
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {pid} still running after cleanup()")
    assert not fakeslicer.ERRORS, fakeslicer.ERRORS


def test_scene_close_and_reload(slicer_app, in_process, tmp_path):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((24, 20, 12))))
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    ui.segmentButton.click()
    run_until(widget, lambda: widget.handle is None)
    assert ui.outputSelector.currentNode() is not None
    scene.Clear()
    assert (
        widget._parameterNode is not None and widget._parameterNode.GetScene() is scene
    )  # re-created for the new scene
    assert ui.outputSelector.currentNode() is None and not ui.showHistogramButton.enabled
    saved = {name: m for name, m in sys.modules.items() if name.startswith("UNetSigmoidSegLib")}
    calls = []
    real_cleanup = widget.cleanup
    widget.cleanup = lambda: (calls.append(1), real_cleanup())
    try:
        widget.host.onReload()
        assert len(calls) == 1  # once: Slicer's reloadScriptedModule calls it, the module does not again
        assert not [
            m for m in sys.modules if m.startswith("UNetSigmoidSegLib")
        ]  # the reload re-imports the library too
    finally:
        sys.modules.update(saved)  # the other tests keep the modules they imported
    assert widget.logic is None and widget.runner is None and getattr(widget.host, "reloaded", False)
    assert not fakeslicer.ERRORS, fakeslicer.ERRORS


def test_bundle_folder_from_the_folder_button_brings_its_defaults(slicer_app, in_process):
    module, scene, widget = open_panel(slicer_app)
    demo = resources.demo_files(str(MODULE_DIR))
    module.qt.QFileDialog.getExistingDirectory = lambda parent, title, start: demo["model"]
    widget.ui.bundleFolderButton.click()
    assert widget.ui.modelPathLineEdit.currentPath == demo["model"]
    assert (
        widget.ui.modelSummaryLabel.text
        == "bundle: UNet, 1→1 channels, activation sigmoid (bundle postprocessing), labels: brain"
    )
    p = P.read_parameters(widget._parameterNode)
    assert (p.modelPath, p.roiSize, p.threshold) == (demo["model"], [96, 96, 96], 0.5)  # the bundle's defaults
    assert widget.ui.roiSizeLineEdit.text == "96,96,96"
    assert_clean()


@pytest.mark.slow
def test_panel_with_a_worker_never_imports_torch(tmp_path):
    """Slicer's own process never imports torch, MONAI or SimpleITK while the panel runs through the worker: the panel
    is opened (over the fakes) in a fresh interpreter, a model summary is read and a segmentation runs, all through a
    real worker; the imports of that interpreter are checked after each step (Testing/widget/panel_without_torch.py).
    """
    import json
    import subprocess

    script = MODULE_DIR.parent / "Testing" / "widget" / "panel_without_torch.py"
    run = subprocess.run(
        [sys.executable, str(script), make_model(tmp_path, out_channels=1), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["runner"] == "WorkerRunner", report
    assert report["worker runs"], report
    assert report["summary"].startswith("checkpoint: UNet") and report["segments"] == 1, report
    assert not report["errors"], report["errors"]
    for step in ("at start", "after setup", "after summary", "after run"):
        assert report[step] == [], f"{step}: Slicer's process imported {report[step]}"
