"""The panel around its questions and its life: the consent question and pip's progress never under a wait cursor,
``--testing`` (Slicer answers questions itself and installs nothing) said as such, and a module widget made without
a parent (a top-level panel, as ``ScriptedLoadableModuleWidget`` allows) set up and cleaned up like the others. Over
the fake Qt widgets, a real slicer-core scene and the real logic (``widget_fixtures``)."""

import pytest
import slicer
from test_panel import make_model, open_panel, run_until

import fakeslicer
from conftest import blob_volume
from mrml_helpers import add_volume
from UNetSigmoidSegLib.widget import dependencies
from widget_fixtures import slicer_app_fixture  # noqa: F401 - fixture


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(dependencies, "pick_python", lambda which=None: None)


def missing_monai(monkeypatch, installed):
    """torch here, MONAI missing until ``installed`` holds something (what pip would have put there)."""
    real = dependencies.requirements_report

    def report(path):
        if installed:
            return real(path)
        return dependencies.check(["monai>=1.3"], version_of=lambda name: "2.3.1" if name == "torch" else None)

    monkeypatch.setattr(dependencies, "requirements_report", report)


def test_the_consent_and_pips_progress_are_never_under_a_wait_cursor(slicer_app, in_process, monkeypatch, tmp_path):
    installed, seen = [], []
    missing_monai(monkeypatch, installed)
    monkeypatch.setattr(
        dependencies, "slicer_confirm", lambda text, details: seen.append(("ask", list(fakeslicer.CURSORS))) or True
    )
    monkeypatch.setattr(
        dependencies,
        "slicer_install_packages",
        lambda reqs: seen.append(("pip", list(fakeslicer.CURSORS))) or installed.append(reqs),
    )
    module, scene, widget = open_panel(slicer_app)
    assert widget.logic is None
    ui = widget.ui
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((16, 16, 8))))
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    started = []
    real_start = widget.startRun
    monkeypatch.setattr(widget, "startRun", lambda: started.append(list(fakeslicer.CURSORS)) or real_start())
    ui.segmentButton.click()
    assert seen == [("ask", []), ("pip", [])]  # the question and the install: the normal cursor
    assert started == [[fakeslicer.make_qt().Qt.WaitCursor]]  # the run's start: the wait cursor …
    assert fakeslicer.CURSORS == [] and widget.handle is not None  # … given back
    run_until(widget, lambda: widget.handle is None)
    assert not fakeslicer.ERRORS and not fakeslicer.DIALOGS

    seen.clear()
    installed.clear()
    ui.installDependenciesButton.click()  # Install…: the same question, the same cursor
    assert [kind for kind, _ in seen] == ["ask", "pip"] and all(cursors == [] for _, cursors in seen)
    assert fakeslicer.CURSORS == [] and not fakeslicer.ERRORS


def test_testing_mode_asks_nothing_installs_nothing_and_says_why(slicer_app, in_process, monkeypatch, tmp_path):
    missing_monai(monkeypatch, [])
    monkeypatch.setattr(dependencies, "slicer_confirm", lambda text, details: pytest.fail("asked in testing mode"))
    monkeypatch.setattr(dependencies, "slicer_install_packages", lambda reqs: pytest.fail("pip in testing mode"))
    monkeypatch.setattr(slicer, "app", fakeslicer.App(testing=True))
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    ui.inputSelector.setCurrentNode(add_volume(scene, blob_volume((16, 16, 8))))
    ui.modelPathLineEdit.currentPath = make_model(tmp_path, out_channels=1)
    ui.segmentButton.click()
    assert widget.handle is None and widget.logic is None and len(fakeslicer.DIALOGS) == 1
    message = fakeslicer.DIALOGS[0]
    assert "Testing mode (--testing): nothing is installed; segmenting needs monai>=1.3 (not installed)" in message
    assert "Still missing after the install" not in message and "without --testing" in message
    assert fakeslicer.CURSORS == [] and not fakeslicer.ERRORS


def test_testing_mode_with_only_optional_packages_missing_runs_and_notes_it():
    report = dependencies.check(
        ["monai>=1.3"], version_of=lambda name: {"torch": "2.3.1", "monai": "1.4.0"}.get(name), optional=["openvino"]
    )
    assert report.ok and report.optional_missing

    def never(*args):
        raise AssertionError("asked or installed in testing mode")

    after = dependencies.ensure(report, never, never, never, never, optional=True, testing=True)
    assert after.ok and "Testing mode (--testing): optional openvino (not installed) not installed" in after.note
    with pytest.raises(dependencies.DependencyError, match="nothing is installed; segmenting needs torch"):
        dependencies.ensure(
            dependencies.check([], version_of=lambda name: None), never, never, never, never, testing=True
        )


def test_a_widget_made_without_a_parent_has_its_panel_and_cleans_up(slicer_app, in_process):
    module, scene = slicer_app
    host = module.UNetSigmoidSegWidget()  # Slicer allows it: a top-level panel, set up by the base class at once
    panel = host.panel
    assert panel is not None and host.logic is panel.logic is not None
    assert host.parent.visible and host.layout.rows  # the panel sits in the top-level widget's layout
    panel.onSceneEndClose(scene, None)  # a top-level panel has no isEntered: it is shown, so it re-initialises
    assert panel._parameterNode is not None
    closed = []
    runner_close = panel.runner.close
    panel.runner.close = lambda: closed.append(True) or runner_close()
    panel.pollTimer.start()
    panel.thresholdTimer.start()
    host.cleanup()
    assert not panel.pollTimer.active and not panel.thresholdTimer.active
    assert closed == [True] and host.logic is None
    assert not fakeslicer.ERRORS
