"""The panel's live threshold and review (Qt wiring): the threshold slider, one slider per segment of a multi-label
result, the statistics table and the histogram of the segmentation selected as output.

``LiveThresholds`` is a mixin of ``Panel``: it uses the panel's ``ui``, ``logic``, ``_syncing`` and
``updateParameterNodeFromGUI``, and owns ``_sliders`` (the per-segment sliders), ``debouncer`` and
``thresholdTimer``: while a slider is dragged the segments follow at most every ``debouncer.delay_ms``, without
clean-up and in the slice views only (a 3-D surface shown keeps its shape: rebuilding it costs far more than a drag
step, docs/BENCHMARKS.md); its release (or a typed value) applies it with clean-up and rebuilds the 3-D surface.
What is shown is decided by ``rules`` and ``debounce`` (plain Python); the thresholding is the logic's (``mrml``).
"""

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from ..errors import UserError
from . import rules
from .debounce import Debouncer
from .errordisplay import showErrors


class LiveThresholds:
    """The live-threshold and review part of ``Panel`` (see the module docstring)."""

    def setupThresholds(self):
        """The sliders' state, the debounce timer and the threshold / histogram signals (called once by ``Panel``)."""
        self._sliders = []
        self.debouncer = Debouncer(50)
        self.thresholdTimer = qt.QTimer()
        self.thresholdTimer.setSingleShot(True)
        self.thresholdTimer.setInterval(self.debouncer.delay_ms)
        self.thresholdTimer.connect("timeout()", self.onThresholdTimer)
        self.ui.thresholdSlider.connect("valueIsChanging(double)", self.onThresholdChanging)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdReleased)
        self.ui.showHistogramButton.connect("clicked()", self.onShowHistogram)

    def liveResult(self, node):
        try:
            return self.logic.liveResult(node) if self.logic is not None and node is not None else None
        except UserError:
            return None

    def onOutputChanged(self, *args):
        """Show the selected segmentation's live thresholds: one slider, plus one per segment (multi-label), and its
        table."""
        live = self.liveResult(self.ui.outputSelector.currentNode())
        box = self.ui.segmentThresholdsGroupBox
        self._sliders = []
        while box.layout().rowCount():
            box.layout().removeRow(0)
        box.setVisible(live is not None and len(live.labels) > 1)
        if live is not None:
            self.ui.thresholdLabel.text, self.ui.thresholdSlider.toolTip = rules.threshold_label(
                "softmax" if live.probabilities.softmax else "sigmoid"
            )
            for label, t in zip(live.labels, live.thresholds) if len(live.labels) > 1 else ():
                box.layout().addRow(label + ":", self.segmentSlider(t))
            self.ui.thresholdSlider.blockSignals(True)
            self.ui.thresholdSlider.value = live.thresholds[0]
            self.ui.thresholdSlider.blockSignals(False)
            self.debouncer.reset(self.currentThresholds(None) or (live.thresholds[0],))
        self.ui.statisticsTableView.setMRMLTableNode(live.table if live is not None else None)
        self.updateParameterNodeFromGUI()

    def segmentSlider(self, value):
        slider = ctk.ctkSliderWidget()
        slider.decimals = 2
        slider.singleStep = 0.01
        slider.minimum = 0.0
        slider.maximum = 1.0
        slider.tracking = False
        slider.value = value
        slider.connect("valueIsChanging(double)", lambda v: self.onThresholdChanging(None))
        slider.connect("valueChanged(double)", lambda v: self.onThresholdReleased(None))
        self._sliders.append(slider)
        return slider

    def currentThresholds(self, value):
        """One per segment slider when ``value`` is None; else ``value`` for all (copied into the segment sliders)."""
        if value is None:
            return tuple(s.value for s in self._sliders)
        for slider in self._sliders:
            slider.blockSignals(True)
            slider.value = value
            slider.blockSignals(False)
        return (value,) * max(1, len(self._sliders))

    def onThresholdChanging(self, value):
        if not self._syncing and self.debouncer.changing(self.currentThresholds(value)):
            self.thresholdTimer.start()

    def onThresholdTimer(self):
        thresholds = self.debouncer.fire()
        if thresholds is not None:
            self.applyThreshold(thresholds, cleanup=False)

    def onThresholdReleased(self, value):
        if self._syncing:
            return
        self.thresholdTimer.stop()
        thresholds = self.debouncer.release(self.currentThresholds(value))
        self.applyThreshold(thresholds, cleanup=True)  # None (released where the drag last showed): the 3-D only
        self.updateParameterNodeFromGUI()

    def applyThreshold(self, thresholds, cleanup):
        """Live (``cleanup`` False: a drag step, 2-D only) or committed (clean-up, 3-D rebuilt); ``thresholds`` None:
        only rebuild the 3-D surface a drag left as it was."""
        node = self.ui.outputSelector.currentNode()
        if self.liveResult(node) is not None:  # else: no result yet, the value is for the next run
            with showErrors(_("The threshold could not be applied."), waitCursor=False):
                if thresholds is None:
                    self.logic.updateSurface(node)
                else:
                    self.logic.setThreshold(node, list(thresholds), cleanup=cleanup, update3D=cleanup)

    def onShowHistogram(self):
        live = self.liveResult(self.ui.outputSelector.currentNode())
        if live is not None and live.plot:
            slicer.modules.plots.logic().ShowChartInLayout(live.plot[0])
