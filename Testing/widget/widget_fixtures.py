"""Fixtures for the widget layer: paths, the parsed .ui, and the module file run against fake Qt widgets.

Test files import the ``*_fixture`` functions (registered under their ``name=``); a conftest.py here would
shadow Testing/conftest.py, which the tests import helpers from."""

import importlib.util
import os
import stat
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fakeslicer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Testing" / "mrml"))  # mrml_helpers: volumes on a real scene
MODULE_DIR = REPO / "UNetSigmoidSeg"
MODULE_FILE = MODULE_DIR / "UNetSigmoidSeg.py"
LIB_DIR = MODULE_DIR / "UNetSigmoidSegLib"
UI_FILE = REPO / "Resources" / "UI" / "UNetSigmoidSeg.ui"


@pytest.fixture(scope="session", name="ui_tree")
def ui_tree_fixture():
    return ET.parse(UI_FILE)


@pytest.fixture(name="slicer_app")
def slicer_app_fixture(monkeypatch):
    """The module file imported as Slicer imports it, over fake qt/ctk widgets and a real slicer-core scene.

    Returns ``(module, scene)``; ``fakeslicer.ERRORS`` / ``DIALOGS`` collect slot exceptions and dialogs."""
    return load_module_over_fakes(monkeypatch)


def load_module_over_fakes(monkeypatch):
    """``slicer_app`` for any ``pytest.MonkeyPatch`` (also outside pytest: ``panel_without_torch.py``)."""
    import slicer
    import slicer.util

    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    fakeslicer.ERRORS.clear()
    fakeslicer.DIALOGS.clear()
    fakeslicer.TIMERS.clear()
    fakeslicer.SETTINGS.clear()
    fakeslicer.PlotsLogic.shown = []
    fakeslicer.CURSORS.clear()
    monkeypatch.setitem(sys.modules, "qt", fakeslicer.make_qt())
    monkeypatch.setitem(sys.modules, "ctk", fakeslicer.make_ctk())
    monkeypatch.setitem(
        sys.modules, "slicer.ScriptedLoadableModule", fakeslicer.make_scripted_loadable_module(str(MODULE_FILE))
    )
    monkeypatch.setitem(sys.modules, "slicer.i18n", fakeslicer.make_i18n())
    monkeypatch.delitem(sys.modules, "UNetSigmoidSegLib.widget.panel", raising=False)  # imports this test's fake qt
    monkeypatch.delitem(sys.modules, "UNetSigmoidSegLib.widget.runon", raising=False)
    monkeypatch.delitem(sys.modules, "UNetSigmoidSegLib.widget.thresholds", raising=False)
    scene = create_headless_scene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", fakeslicer.App(testing=False), raising=False)  # a user's session
    monkeypatch.setattr(
        slicer,
        "modules",
        types.SimpleNamespace(plots=types.SimpleNamespace(logic=fakeslicer.PlotsLogic)),
        raising=False,
    )
    monkeypatch.setattr(slicer.util, "loadUI", fakeslicer.load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", fakeslicer.child_widget_variables)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fakeslicer.try_with_error_display)
    monkeypatch.setattr(slicer.util, "errorDisplay", fakeslicer.error_display)
    spec = importlib.util.spec_from_file_location(
        "UNetSigmoidSeg", str(MODULE_FILE)
    )  # as qSlicerScriptedUtils::loadSourceAsModule
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "UNetSigmoidSeg", module)
    spec.loader.exec_module(module)
    return module, scene


@pytest.fixture(name="python_slicer")
def python_slicer_fixture(tmp_path, monkeypatch):
    """A ``PythonSlicer`` on PATH that runs this interpreter (as Slicer's launcher provides one)."""
    if os.name != "posix":
        pytest.skip("the PythonSlicer shim is a shell script")
    return install_python_slicer(tmp_path, monkeypatch)


def install_python_slicer(folder, monkeypatch):
    """Write ``folder/bin/PythonSlicer`` (runs this interpreter) and put it first on PATH; returns its path."""
    folder = Path(folder) / "bin"
    folder.mkdir()
    shim = folder / "PythonSlicer"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return str(shim)
