"""The in-Slicer self-test (UNetSigmoidSegLib/widget/selftest.py), run here over the fake Qt widgets: its code paths
(worker through PythonSlicer, panel clicks, event processing, the debounced drag) execute for real, only the
Qt/Slicer application is stood in for. The real run needs 3D Slicer: see README "Install into 3D Slicer"."""

import os
import unittest

import pytest

import fakeslicer
from UNetSigmoidSegLib.widget import dependencies
from widget_fixtures import python_slicer_fixture, slicer_app_fixture  # noqa: F401 - fixtures


def load_volume(path):
    """slicer.util.loadVolume stand-in: the file through the engine's reader into a scalar volume node."""
    import slicer

    from UNetSigmoidSegLib.engine.files.volume import read_volume

    volume = read_volume(path)
    return slicer.util.addVolumeFromArray(volume.array[0].transpose(2, 1, 0), ijkToRAS=volume.affine, name="T1_head")


@pytest.mark.slow
def test_self_test_passes_over_the_fakes(slicer_app, python_slicer, monkeypatch):
    import slicer
    import slicer.util

    module, scene = slicer_app
    widgets = []

    def module_widget(name):
        if not widgets:
            widgets.append(module.UNetSigmoidSegWidget(fakeslicer.module_panel()))
            widgets[0].setup()
        return widgets[0]

    monkeypatch.setattr(slicer, "app", fakeslicer.App(), raising=False)
    monkeypatch.setattr(slicer.util, "selectModule", lambda name: module_widget(name).enter())
    monkeypatch.setattr(slicer.util, "getModuleWidget", module_widget)
    monkeypatch.setattr(slicer.util, "loadVolume", load_volume)
    test = module.UNetSigmoidSegTest()
    try:
        test.runTest()
    finally:
        if widgets:
            widgets[0].cleanup()
    assert fakeslicer.DIALOGS == ["delayDisplay: Logic through the worker: passed", "delayDisplay: Panel: passed"]
    assert not fakeslicer.ERRORS, fakeslicer.ERRORS
    assert widgets[0].panel.runner is None


@pytest.mark.parametrize("testing", [True, False], ids=["ctest", "user"])
def test_self_test_without_torch_skips_in_testing_mode_and_fails_for_a_user(slicer_app, monkeypatch, testing):
    """A build machine's ctest (Slicer ``--testing``) has no PyTorch extension: the self-test is skipped with what to
    install, and ``slicer.testing.runUnitTest`` (a TextTestRunner) counts that a success. A user who runs it
    (Reload and Test) without the dependencies gets a failure saying what to install."""
    import slicer

    module, scene = slicer_app
    missing = dependencies.check(["monai>=1.3"], version_of=lambda name: None)  # neither torch nor MONAI installed
    monkeypatch.setattr(dependencies, "requirements_report", lambda path: missing)
    monkeypatch.setattr(slicer, "app", fakeslicer.App(testing=testing), raising=False)
    suite = unittest.TestLoader().loadTestsFromTestCase(module.UNetSigmoidSegTest)  # as runUnitTest loads it
    assert suite.countTestCases() == 2
    with open(os.devnull, "w") as sink:
        result = unittest.TextTestRunner(stream=sink).run(suite)
    reasons = [reason for _test, reason in result.skipped] + [text for _test, text in result.failures]
    assert len(reasons) == 2 and all("torch>=2.1 (not installed), monai>=1.3 (not installed)" in r for r in reasons)
    if testing:
        assert result.wasSuccessful() and len(result.skipped) == 2
        assert all(r.startswith("UNetSigmoidSeg self-test skipped") and "PyTorch extension" in r for r in reasons)
    else:
        assert not result.wasSuccessful() and len(result.failures) == 2 and not result.skipped
        assert all("Install the dependencies first" in r for r in reasons)
    with pytest.raises(unittest.SkipTest if testing else AssertionError):
        module.UNetSigmoidSegTest().runTest()  # Reload and Test
