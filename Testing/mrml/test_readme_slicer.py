"""The README's Slicer console blocks run as written against a real slicer-core scene (``slicer.mrmlScene``), the
real logic and — for the block that asks Slicer for the module's logic — the module file set up as Slicer sets it up
over the fake Qt widgets (Testing/widget); ``slicer.util.getModuleLogic`` is the one application call stood in for,
and it exists in the real ``slicer.util`` (checked)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from readme_blocks import block, example_files

from conftest import REPO

sys.path.insert(0, str(REPO / "Testing" / "widget"))
import fakeslicer  # noqa: E402
from widget_fixtures import install_python_slicer, load_module_over_fakes  # noqa: E402


def _add_volume(scene, path: Path, name: str):
    image = sitk.ReadImage(str(path))
    node = slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image).astype(np.float32), name=name)
    node.SetSpacing(*image.GetSpacing())
    assert scene.GetFirstNodeByName(name) is node
    return node


@pytest.fixture
def app(tmp_path, monkeypatch):
    module, scene = load_module_over_fakes(monkeypatch)
    monkeypatch.chdir(example_files(tmp_path))
    return module, scene


def test_console_block_runs_as_written(app):
    _module, scene = app
    _language, text = block('volumeNode = slicer.util.getNode("ct")')
    _add_volume(scene, Path("ct.nii.gz"), "ct")
    namespace = {"slicer": slicer}
    exec(compile(text, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    seg, logic, handle = namespace["seg"], namespace["logic"], namespace["handle"]
    assert seg.GetSegmentation().GetNumberOfSegments() == 2
    assert [row["threshold"] for row in logic.statistics(seg)] == [0.3, 0.6]
    handle.wait()  # the async run the block started, to its end
    assert handle.done and handle.error is None


def test_module_logic_block_runs_as_written(app, tmp_path, monkeypatch):
    module, scene = app
    _language, text = block('getModuleLogic("UNetSigmoidSeg")')
    install_python_slicer(tmp_path, monkeypatch)  # Slicer's launcher puts PythonSlicer on PATH
    host = module.UNetSigmoidSegWidget(fakeslicer.module_panel())
    host.setup()
    assert callable(slicer.util.getModuleLogic)  # the real slicer.util has it; Slicer answers with:
    monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: host.logic if name == "UNetSigmoidSeg" else None)
    _add_volume(scene, Path("T1_head.nii.gz"), "T1_head")
    namespace = {"slicer": slicer}
    try:
        exec(compile(text, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
        assert namespace["seg"].GetSegmentation().GetNumberOfSegments() == 2
        assert host.logic.getParameters().threshold == 0.4
        assert type(namespace["logic"]).__name__ == "UNetSigmoidSegLogic"
    finally:
        namespace["logic"].runner.close() if "logic" in namespace else None
        host.cleanup()
