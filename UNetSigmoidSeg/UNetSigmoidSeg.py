"""UNetSigmoidSeg — 3D Slicer module: registration, panel wiring, self-test registration.

Behaviour lives in ``UNetSigmoidSegLib``: ``mrml.logic`` (what Segment and the slider do),
``worker`` (the background process), ``widget`` (panel rules, dependencies, self-test; no Qt).
"""

import contextlib
import os
import time

import ctk
import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from UNetSigmoidSegLib.errors import CancelledError, UserError
from UNetSigmoidSegLib.mrml import parameters as P
from UNetSigmoidSegLib.widget import bindings, dependencies, rules
from UNetSigmoidSegLib.widget.debounce import Debouncer
from UNetSigmoidSegLib.widget.resources import purge_modules, resource_path
from UNetSigmoidSegLib.widget.selftest import SelfTest
from UNetSigmoidSegLib.widget.summary import ModelSummaries, load_info
from UNetSigmoidSegLib.widget.tap import TappedRunner, log_line

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def __getattr__(name):
    """``from UNetSigmoidSeg import UNetSigmoidSegLogic``, imported on first use: it needs torch, Slicer's start-up does not."""
    if name == "UNetSigmoidSegLogic":
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

        return UNetSigmoidSegLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def showErrors(message, waitCursor=True):
    """``tryWithErrorDisplay``; a UserError (shown with what to do) then stops there instead of printing a traceback."""
    with contextlib.suppress(UserError), slicer.util.tryWithErrorDisplay(message, waitCursor=waitCursor):
        yield


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
the network again. Segments are on the exact input grid. Not a medical device.""")
        self.parent.acknowledgementText = _("""
Built on MONAI, PyTorch and 3D Slicer. The background-process pattern follows SlicerMONAIAuto3DSeg (Andras Lasso), the
module layout SlicerNNUnet (Kitware). Demo data: ITK example data (Apache-2.0).""")
        iconPath = resource_path(os.path.dirname(parent.path), "Icons/UNetSigmoidSeg.png")
        if os.path.isfile(iconPath):  # the source tree keeps Resources beside the module folder, not in it
            parent.icon = qt.QIcon(iconPath)


class UNetSigmoidSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wiring only: widgets ⇄ parameter node, buttons → ``UNetSigmoidSegLogic``, a timer polling the run."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self.worker = self.handle = self._parameterNode = None
        self._syncing, self._applyDefaults, self._started, self._sliders = False, False, 0.0, []
        self.summaries, self.debouncer = ModelSummaries(), Debouncer(50)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resource_path(MODULE_DIR, "UI/UNetSigmoidSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        for combo, items in ((self.ui.activationComboBox, rules.ACTIVATIONS), (self.ui.deviceComboBox, rules.DEVICES),
                             (self.ui.blendModeComboBox, rules.BLEND_MODES)):
            for value, tip in items:
                combo.addItem(value)
                combo.setItemData(combo.count - 1, tip, qt.Qt.ToolTipRole)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.thresholdTimer = qt.QTimer()
        self.thresholdTimer.setSingleShot(True)
        self.thresholdTimer.setInterval(self.debouncer.delay_ms)
        self.thresholdTimer.connect("timeout()", self.onThresholdTimer)
        bindings.connect(self.ui, self.updateParameterNodeFromGUI)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.outputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.modelPathLineEdit.connect("validInputChanged(bool)", self.updateParameterNodeFromGUI)  # cleared: no currentPathChanged
        self.ui.trustBundleCheckBox.connect("toggled(bool)", lambda on: self.requestSummary())
        self.ui.keepWorkerWarmCheckBox.connect("toggled(bool)", self.onKeepWarmToggled)
        self.ui.bundleFolderButton.connect("clicked()", self.onBrowseBundle)
        self.ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        self.ui.segmentButton.connect("clicked()", self.onSegmentButton)
        self.ui.thresholdSlider.connect("valueIsChanging(double)", self.onThresholdChanging)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdReleased)
        self.ui.showHistogramButton.connect("clicked()", self.onShowHistogram)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.deps = self.checkDependencies()
        if self.deps.ok:
            self.createLogic()
        self.initializeParameterNode()

    def checkDependencies(self):
        return dependencies.check(dependencies.read_requirements(resource_path(MODULE_DIR, "requirements.txt")))

    def createLogic(self):
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
        from UNetSigmoidSegLib.mrml.runner import InProcessRunner

        self.worker = self.makeWorker()
        self.logic = UNetSigmoidSegLogic(slicer.mrmlScene, runner=TappedRunner(self.worker or InProcessRunner(), lambda m: self.log(log_line(m))))

    def makeWorker(self):
        python, why = dependencies.pick_python(), "PythonSlicer not found on PATH"
        try:
            from UNetSigmoidSegLib.worker.client import WorkerClient
        except ImportError as exc:
            python, why = None, f"no background worker ({exc})"
        if not python:
            self.log(f"{why}: runs happen in Slicer's process and the panel waits for them.")
            return None
        warm = self.ui.keepWorkerWarmCheckBox.checked
        worker = WorkerClient(python_executable=python, idle_timeout_s=rules.worker_idle_timeout(warm))
        if warm:
            worker.start(wait=False)  # torch and MONAI import while the user picks inputs; the hello gives the versions
            self.pollTimer.start()
        return worker

    def ensureLogic(self):
        """The logic, after installing torch / MONAI with the user's consent (a refusal raises DependencyError)."""
        if self.logic is None:
            self.deps = dependencies.ensure(self.checkDependencies(), dependencies.slicer_confirm, dependencies.slicer_install_torch,
                                            dependencies.slicer_install_packages, self.checkDependencies)
            self.createLogic()
        return self.logic

    def onInstallDependencies(self):
        with showErrors(_("PyTorch and MONAI were not installed.")):
            self.ensureLogic()
        self.requestSummary()

    def onKeepWarmToggled(self, warm):
        if self.worker is None:
            return
        self.worker.idle_timeout_s = rules.worker_idle_timeout(warm)  # used by the next worker process
        if not warm and self.handle is None and not self.summaries.inspecting:
            self.worker.close()  # free the idle worker's memory now; the next run starts a fresh one
            self.logic.runner.runner = self.worker = self.makeWorker()

    def initializeParameterNode(self):
        self.setParameterNode(P.get_parameter_node(slicer.mrmlScene))
        if P.get_reference(self._parameterNode, "InputVolume") is None:
            P.set_reference(self._parameterNode, "InputVolume", slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode"))

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._syncing or self._parameterNode is None:
            return
        self._syncing = True
        try:
            params = P.read_parameters(self._parameterNode)
            bindings.show(self.ui, params)
            self.ui.thresholdSlider.value = params.threshold
            self.ui.inputSelector.setCurrentNode(P.get_reference(self._parameterNode, "InputVolume"))
            self.ui.outputSelector.setCurrentNode(P.get_reference(self._parameterNode, "OutputSegmentation"))
        finally:
            self._syncing = False
        self.onOutputChanged()

    def updateParameterNodeFromGUI(self, *args):
        if self._syncing or self._parameterNode is None:
            return
        self._syncing = True
        try:
            params = bindings.read(self.ui, P.read_parameters(self._parameterNode))
            params.threshold, params.segmentThresholds = self.ui.thresholdSlider.value, [s.value for s in self._sliders]
            P.write_parameters(self._parameterNode, params)
            P.set_reference(self._parameterNode, "InputVolume", self.ui.inputSelector.currentNode())
            P.set_reference(self._parameterNode, "OutputSegmentation", self.ui.outputSelector.currentNode())
        finally:
            self._syncing = False
        self.updateStatus()

    def onBrowseBundle(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("MONAI bundle folder"), self.ui.modelPathLineEdit.currentPath)
        if folder:
            self.ui.modelPathLineEdit.currentPath = folder

    def onModelPathChanged(self, path):
        self._applyDefaults = not self._syncing  # a model the user picks brings its defaults; a restored scene keeps its values
        self.requestSummary()

    def requestSummary(self):
        path = self.ui.modelPathLineEdit.currentPath
        self.ui.modelSummaryLabel.text = self.summaries.request(path, self.ui.trustBundleCheckBox.checked, self.worker,
                                                                self.handle is not None, load_info if self.logic is not None else None)
        if self.summaries.inspecting:
            self.pollTimer.start()
        info = self.summaries.info
        if info is not None and self._applyDefaults and self._parameterNode is not None:
            self._applyDefaults = False
            params = P.read_parameters(self._parameterNode)
            for field, value in rules.model_defaults(info, params.activation).items():
                setattr(params, field, value)
            P.write_parameters(self._parameterNode, params)  # the observer shows them
        self.updateStatus()

    def onSegmentButton(self):
        if self.handle is not None:
            self.handle.cancel()
            self.updateStatus()
            return
        with showErrors(_("Segmentation could not start.")):
            self.ensureLogic()
            self.updateParameterNodeFromGUI()
            params = P.read_parameters(self._parameterNode)
            options = rules.segment_kwargs(params, self.ui.roiSizeLineEdit.text)
            self.log(f"--- {time.strftime('%H:%M:%S')} segment {self.ui.inputSelector.currentNode().GetName()} with {params.modelPath}")
            self._started = time.time()
            self.handle = self.logic.segmentAsync(self.ui.inputSelector.currentNode(), params.modelPath, outputSegmentation=self.ui.outputSelector.currentNode(),
                                                  onProgress=self.onProgress, onFinished=self.onFinished, onError=self.onError, **options)
            params.recentModels = rules.remember(params.recentModels, params.modelPath)
            P.write_parameters(self._parameterNode, params)
            self.ui.modelPathLineEdit.addCurrentPathToHistory()
            self.ui.progressBar.value = 0
            self.pollTimer.start()
        self.updateStatus()

    def onPoll(self):
        if self.handle is not None and self.handle.poll():
            self.handle = None
            self.requestSummary()
        if self.summaries.poll():
            self.requestSummary()  # for the path shown now (it may have changed meanwhile)
        starting = self.worker is not None and self.worker.pid is not None and self.worker.hello is None
        if self.handle is None and not self.summaries.inspecting and not starting:
            self.pollTimer.stop()
        self.updateStatus()

    def onProgress(self, stage, fraction, message):
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = rules.progress_text(stage, fraction, message)

    def log(self, text):
        self.ui.logTextEdit.appendPlainText(text)

    def onFinished(self, segmentationNode):
        self.handle = None
        self.ui.progressBar.value = 100
        P.set_reference(self._parameterNode, "ProbabilityVolume", segmentationNode.GetNodeReference("UNetSigmoidSeg.Probabilities"))
        self.ui.outputSelector.setCurrentNode(segmentationNode)
        self.onOutputChanged()  # its thresholds, per-segment sliders and table (also when it was selected already)
        stats = self.logic.statistics(segmentationNode)
        self.ui.statusLabel.text = rules.run_summary(stats, time.time() - self._started, segmentationNode.GetAttribute("UNetSigmoidSeg.Device"))
        self.log(self.ui.statusLabel.text)

    def onError(self, exc):
        self.handle = None
        self.ui.progressBar.value = 0
        text, details = rules.error_text(exc)
        self.ui.statusLabel.text = text
        self.log(text + ("\n" + details if details else ""))
        if not isinstance(exc, CancelledError):
            slicer.util.errorDisplay(_("Segmentation failed.") + "\n\n" + text, detailedText=details)

    def liveResult(self, node):
        try:
            return self.logic.liveResult(node) if self.logic is not None and node is not None else None
        except UserError:
            return None

    def onOutputChanged(self, *args):
        """Show the selected segmentation's live thresholds: one slider, plus one per segment (multi-label), and its table."""
        live = self.liveResult(self.ui.outputSelector.currentNode())
        box, self._sliders = self.ui.segmentThresholdsGroupBox, []
        while box.layout().rowCount():
            box.layout().removeRow(0)
        box.setVisible(live is not None and len(live.names) > 1)
        if live is not None:
            self.ui.thresholdLabel.text, self.ui.thresholdSlider.toolTip = rules.threshold_label(live.cache.mode)
            for name, t in zip(live.names, live.thresholds) if len(live.names) > 1 else ():
                slider = ctk.ctkSliderWidget()
                slider.decimals, slider.singleStep, slider.minimum, slider.maximum, slider.tracking, slider.value = 2, 0.01, 0.0, 1.0, False, t
                slider.connect("valueIsChanging(double)", lambda v: self.onThresholdChanging(None))
                slider.connect("valueChanged(double)", lambda v: self.onThresholdReleased(None))
                box.layout().addRow(name + ":", slider)
                self._sliders.append(slider)
            self.ui.thresholdSlider.blockSignals(True)
            self.ui.thresholdSlider.value = live.thresholds[0]
            self.ui.thresholdSlider.blockSignals(False)
            self.debouncer.reset(self.currentThresholds(None) or (live.thresholds[0],))
        self.ui.statisticsTableView.setMRMLTableNode(live.table if live is not None else None)
        self.updateParameterNodeFromGUI()

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
        if thresholds is not None:
            self.applyThreshold(thresholds, cleanup=True)
        self.updateParameterNodeFromGUI()

    def applyThreshold(self, thresholds, cleanup):
        node = self.ui.outputSelector.currentNode()
        if self.liveResult(node) is not None:  # else: no result yet, the value is for the next run
            with showErrors(_("The threshold could not be applied."), waitCursor=False):
                self.logic.setThreshold(node, list(thresholds), cleanup=cleanup)

    def onShowHistogram(self):
        live = self.liveResult(self.ui.outputSelector.currentNode())
        if live is not None and live.plot:
            slicer.modules.plots.logic().ShowChartInLayout(live.plot[0])

    def updateStatus(self):
        path = self.ui.modelPathLineEdit.currentPath
        state = rules.PanelState(volume=self.ui.inputSelector.currentNode() is not None, model_path=path,
                                 model_exists=bool(path) and os.path.exists(path), model_error=self.summaries.error,
                                 inspecting=self.summaries.inspecting, running=self.handle is not None,
                                 cancelling=self.handle is not None and self.handle.cancel_reason is not None,
                                 dependencies_ok=self.logic is not None)
        button = rules.segment_button(state)
        self.ui.segmentButton.text, self.ui.segmentButton.enabled, self.ui.segmentButton.toolTip = button.text, button.enabled, button.tooltip
        hello = self.worker.hello if self.worker is not None else None
        self.ui.dependenciesLabel.text = dependencies.versions_text(self.deps, hello)
        self.ui.installDependenciesButton.visible = self.logic is None
        self.ui.deviceInfoLabel.text = dependencies.device_label(self.ui.deviceComboBox.currentText, hello)
        self.ui.showHistogramButton.enabled = self.liveResult(self.ui.outputSelector.currentNode()) is not None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)  # the logic cancels the run (the timer polls it to its end) and drops its cache

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def enter(self):
        self.initializeParameterNode()

    def cleanup(self):
        """Stop the timers, cancel the run, stop the worker: closing or reloading the module leaves no process behind."""
        self.removeObservers()
        for timer in (getattr(self, "pollTimer", None), getattr(self, "thresholdTimer", None)):
            if timer is not None:
                timer.stop()
        if self.logic is not None:
            self.logic.cleanup()
        if self.worker is not None:
            self.worker.close()
        self.handle = self.logic = self.worker = None

    def onReload(self):
        self.cleanup()
        purge_modules()  # re-import the edited UNetSigmoidSegLib too, not only this file
        ScriptedLoadableModuleWidget.onReload(self)


class UNetSigmoidSegTest(SelfTest, ScriptedLoadableModuleTest):
    """In-Slicer self-test (UNetSigmoidSegLib/widget/selftest.py): the logic through the worker, then the panel."""
