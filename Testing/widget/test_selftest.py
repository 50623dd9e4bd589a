"""The in-Slicer self-test (UNetSigmoidSegLib/widget/selftest.py), run here over the fake Qt widgets: its code paths
(worker through PythonSlicer, panel clicks, event processing, the debounced drag) execute for real, only the
Qt/Slicer application is stood in for. The real run needs 3D Slicer: see README "Install into 3D Slicer"."""

import pytest

import fakeslicer
from widget_fixtures import python_slicer_fixture, slicer_app_fixture  # noqa: F401 - fixtures


def load_volume(path):
    """slicer.util.loadVolume stand-in: the file through the engine's reader into a scalar volume node."""
    import slicer

    from UNetSigmoidSegLib.engine.volume import read_volume

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
            widgets.append(module.UNetSigmoidSegWidget())
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
