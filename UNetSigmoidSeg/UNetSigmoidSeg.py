"""UNetSigmoidSeg — 3D Slicer module: registers the module, creates the panel from the library, holds the self-test.

Behaviour lives in ``UNetSigmoidSegLib``: ``widget.panel`` (the panel's Qt wiring), ``widget.rules`` (what it
shows and allows), ``mrml.logic`` (what Segment and the slider do), ``worker`` (the background process).
"""

import os

import qt
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from UNetSigmoidSegLib.widget.resources import purge_modules, resource_path
from UNetSigmoidSegLib.widget.selftest import SelfTest

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def __getattr__(name):
    """``from UNetSigmoidSeg import UNetSigmoidSegLogic``, imported on first use (Slicer's start-up needs none)."""
    if name == "UNetSigmoidSegLogic":
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

        return UNetSigmoidSegLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UNetSigmoidSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("UNet Sigmoid Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["UNetSigmoidSeg developers"]
        self.parent.helpText = _("""
Segment a volume with a MONAI UNet (checkpoint, TorchScript or MONAI bundle). The network runs in a background worker;
its logits become probabilities (sigmoid / softmax) and the threshold slider re-thresholds them live, without running
the network again. Segments are on the exact input grid. Research use — not for clinical use: not a medical device.""")
        self.parent.acknowledgementText = _("""
Built on MONAI, PyTorch and 3D Slicer. The background-process pattern follows SlicerMONAIAuto3DSeg (Andras Lasso), the
module layout SlicerNNUnet (Kitware). Demo data: ITK example data (Apache-2.0).""")
        iconPath = resource_path(os.path.dirname(parent.path), "Icons/UNetSigmoidSeg.png")
        if os.path.isfile(iconPath):  # the source tree keeps Resources beside the module folder, not in it
            parent.icon = qt.QIcon(iconPath)


class UNetSigmoidSegWidget(ScriptedLoadableModuleWidget):
    """Creates the panel (``UNetSigmoidSegLib.widget.panel.Panel``) and delegates to it."""

    def __init__(self, parent=None):
        self.panel = None  # first: without a parent, the base class calls setup() from its __init__
        ScriptedLoadableModuleWidget.__init__(self, parent)

    @property
    def logic(self):
        """The panel's ``UNetSigmoidSegLogic`` (``slicer.util.getModuleLogic("UNetSigmoidSeg")``)."""
        return self.panel.logic if self.panel is not None else None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from UNetSigmoidSegLib.widget.panel import Panel

        self.panel = Panel(self, MODULE_DIR)

    def enter(self):
        if self.panel is not None:
            self.panel.enter()

    def cleanup(self):
        """Closing or reloading the module stops the timers, cancels the run and stops the worker."""
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        # no cleanup() here: slicer.util.reloadScriptedModule calls it (5.8, 5.10, main); twice would run it twice
        purge_modules()  # re-import the edited UNetSigmoidSegLib too, not only this file
        ScriptedLoadableModuleWidget.onReload(self)


class UNetSigmoidSegTest(SelfTest, ScriptedLoadableModuleTest):
    """In-Slicer self-test (UNetSigmoidSegLib/widget/selftest.py): the logic through the worker, then the panel."""
