"""The module's panel: Qt widgets ⇄ parameter node, buttons → ``UNetSigmoidSegLogic``, a timer polling the run.

Wiring only; what the panel shows and allows is decided by ``rules`` (plain Python, tested without Qt); the live
threshold and review are the mixin ``thresholds.LiveThresholds``. The module file's ``UNetSigmoidSegWidget``
creates one ``Panel`` in ``setup`` and delegates to it. Needs Slicer's ``qt``, ``ctk`` and ``slicer`` (imported at
the top here and in ``thresholds``: these files run only inside Slicer, or over the test stand-ins); torch is
imported only if the user runs in Slicer's own process.
"""

import os
import time

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from ..contract.runner import Runner
from ..errors import CancelledError, UserError
from ..mrml import parameters as P
from . import bindings, dependencies, rules
from .errordisplay import showErrors, waitCursor
from .resources import resource_path
from .runon import RunOn
from .summary import ModelSummaries
from .thresholds import LiveThresholds

HELLO_WAIT_S = 200.0  # how long the panel polls for a starting worker's versions


class Panel(LiveThresholds, VTKObservationMixin):
    """The panel inside the module widget ``host`` (a ``ScriptedLoadableModuleWidget``); ``moduleDir`` holds the
    module file (resources are found from it)."""

    def __init__(self, host, moduleDir):
        VTKObservationMixin.__init__(self)
        self.host, self.moduleDir = host, moduleDir
        self.logic = None
        self.runner: Runner = None
        self.handle = None
        self._parameterNode = None
        self._syncing = False
        self._applyDefaults = False
        self._started = 0.0
        self._helloDeadline = 0.0
        self.summaries = ModelSummaries()
        uiWidget = slicer.util.loadUI(resource_path(moduleDir, "UI/UNetSigmoidSeg.ui"))
        host.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        bindings.fill_combos(self.ui, qt.Qt.ToolTipRole)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.setupThresholds()
        self.connectSignals()
        self.runOn = RunOn(self)  # this computer or a server: Slicer's settings, never the scene
        self.deps = self.checkDependencies()
        if self.runOn.server and self.runOn.remote is not None:
            self.createLogic(self.runOn.remote)  # a server needs no torch here
        elif self.deps.ok and not self.runOn.server:
            self.createLogic()
        self.initializeParameterNode()

    def connectSignals(self):
        ui = self.ui
        bindings.connect(ui, self.updateParameterNodeFromGUI)
        ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        ui.outputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)
        ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        # a cleared path emits no currentPathChanged
        ui.modelPathLineEdit.connect("validInputChanged(bool)", self.updateParameterNodeFromGUI)
        ui.trustBundleCheckBox.connect("toggled(bool)", lambda on: self.requestSummary())
        ui.keepWorkerWarmCheckBox.connect("toggled(bool)", self.onKeepWarmToggled)
        ui.bundleFolderButton.connect("clicked()", self.onBrowseBundle)
        ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        ui.segmentButton.connect("clicked()", self.onSegmentButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    # ---------------------------------------------------------------- dependencies, runner, logic
    def checkDependencies(self):
        return dependencies.requirements_report(resource_path(self.moduleDir, "requirements.txt"))

    def createLogic(self, runner=None):
        """The logic with ``runner`` (default: this computer's), or the existing logic switched to it."""
        from ..mrml.logic import UNetSigmoidSegLogic

        self.runner = runner or self.makeRunner()
        if self.logic is None:
            self.logic = UNetSigmoidSegLogic(slicer.mrmlScene, runner=self.runner)
        else:
            self.logic.setRunner(self.runner)
        self.onKeepWarmToggled(self.ui.keepWorkerWarmCheckBox.checked)

    def makeRunner(self):
        """The background worker in ``PythonSlicer``; Slicer's own process when there is none (said in the log)."""
        from ..runners import make_runner

        python = dependencies.pick_python()
        if not python:
            self.log("PythonSlicer not found on PATH: runs happen in Slicer's process and the panel waits for them.")
        return make_runner(worker=bool(python), worker_python=python)

    def ensureLogic(self, optional: bool = False):
        """The logic, after installing torch / MONAI with the user's consent (a refusal raises DependencyError); on a
        server, with the server's runner (nothing to install). ``optional``: also offer the optional packages when
        nothing else is missing (the Install button)."""
        if self.runOn.server:
            problem = self.runOn.problem()
            if problem:
                raise UserError(problem, "Check the Run-on group (server URL, token, Connect) and the server model.")
            if self.logic is None or self.logic.runner is not self.runOn.remote:
                self.createLogic(self.runOn.remote)
            return self.logic
        local = self.logic is not None and self.logic.runner.runs_here
        if not local or optional:
            self.deps = dependencies.ensure(
                self.checkDependencies(),
                dependencies.slicer_confirm,
                dependencies.slicer_install_torch,
                dependencies.slicer_install_packages,
                self.checkDependencies,
                optional=optional,
                testing=slicer.app.testingEnabled(),  # --testing: dialogs answer themselves, pip_ensure skips
            )
            if self.deps.note:
                self.log(self.deps.note)
        if not local:
            self.createLogic()
        return self.logic

    def onInstallDependencies(self):
        with showErrors(_("PyTorch and MONAI were not installed."), waitCursor=False):  # asks, shows pip's progress
            self.ensureLogic(optional=True)
        self.requestSummary()

    def onRunOnChanged(self):
        """(RunOn) The choice or the server changed: use its runner; back on this computer, a local one."""
        if self.handle is not None:
            return
        if self.runOn.server and self.runOn.remote is not None:
            self.createLogic(self.runOn.remote)
        elif not self.runOn.server and self.logic is not None and not self.logic.runner.runs_here and self.deps.ok:
            self.createLogic()
        elif not self.runOn.server and self.logic is None and self.deps.ok:
            self.createLogic()
        self._applyDefaults = False
        self.requestSummary()

    def onServerModelChanged(self):
        """(RunOn) The user picked another server model: it brings its defaults, as a picked file does."""
        self._applyDefaults = not self._syncing

    def pollUntil(self, deadline):
        """Keep the timer polling (a starting worker's or a server's answer) until ``deadline`` at most."""
        self._helloDeadline = max(self._helloDeadline, deadline)
        self.pollTimer.start()

    def onKeepWarmToggled(self, warm):
        if self.runner is None or (not warm and (self.handle is not None or self.summaries.inspecting)):
            return
        self.runner.keep_warm(bool(warm))  # warm: the worker starts now and torch imports while inputs are picked
        if warm and self.runner.describe() is None:
            self._helloDeadline = time.time() + HELLO_WAIT_S  # poll until its versions are known
            self.pollTimer.start()

    # ---------------------------------------------------------------- parameter node
    def initializeParameterNode(self):
        self.setParameterNode(P.get_parameter_node(slicer.mrmlScene))
        if P.get_reference(self._parameterNode, "InputVolume") is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            P.set_reference(self._parameterNode, "InputVolume", first)

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
            params.threshold = self.ui.thresholdSlider.value
            params.segmentThresholds = [s.value for s in self._sliders]
            P.write_parameters(self._parameterNode, params)
            P.set_reference(self._parameterNode, "InputVolume", self.ui.inputSelector.currentNode())
            P.set_reference(self._parameterNode, "OutputSegmentation", self.ui.outputSelector.currentNode())
        finally:
            self._syncing = False
        self.updateStatus()

    # ---------------------------------------------------------------- model
    def onBrowseBundle(self):
        folder = qt.QFileDialog.getExistingDirectory(
            self.host.parent, _("MONAI bundle folder"), self.ui.modelPathLineEdit.currentPath
        )
        if folder:
            self.ui.modelPathLineEdit.currentPath = folder

    def onModelPathChanged(self, path):
        self._applyDefaults = (
            not self._syncing
        )  # a model the user picks brings its defaults; a restored scene keeps its values
        self.requestSummary()

    def requestSummary(self):
        if self.runOn.server:
            info, why = self.runOn.modelInfo()
            self.ui.modelSummaryLabel.text = why or (info.summary() if info is not None else "")
            self.applyModelDefaults(info)
            self.updateStatus()
            return
        path = self.ui.modelPathLineEdit.currentPath
        self.ui.modelSummaryLabel.text = self.summaries.request(
            path,
            self.ui.trustBundleCheckBox.checked,
            self.runner if self.logic is not None else None,
            self.handle is not None,
        )
        if self.summaries.inspecting:
            self.pollTimer.start()
        self.applyModelDefaults(self.summaries.info)
        self.updateStatus()

    def applyModelDefaults(self, info):
        """A model the user just picked brings its defaults (threshold, ROI size, overlap, …)."""
        if info is not None and self._applyDefaults and self._parameterNode is not None:
            self._applyDefaults = False
            params = P.read_parameters(self._parameterNode)
            for name, value in rules.model_defaults(info, params.activation).items():
                setattr(params, name, value)
            P.write_parameters(self._parameterNode, params)  # the observer shows them

    # ---------------------------------------------------------------- running
    def onSegmentButton(self):
        if self.handle is not None:
            self.handle.cancel()
            self.updateStatus()
            return
        with showErrors(_("Segmentation could not start."), waitCursor=False):
            self.ensureLogic()  # may ask and install: no wait cursor over the question and pip's progress
            with waitCursor():
                self.startRun()
        self.updateStatus()

    def startRun(self):
        """Start the segmentation the panel describes (dependencies already there)."""
        self.updateParameterNodeFromGUI()
        params = P.read_parameters(self._parameterNode)
        server_model = self.runOn.settings.model if self.runOn.server else None
        spec, options, probabilityVolume = rules.run_request(params, self.ui.roiSizeLineEdit.text, server_model)
        volume = self.ui.inputSelector.currentNode()
        where = f" on {self.runOn.settings.url}" if server_model else ""
        self.log(f"--- {time.strftime('%H:%M:%S')} segment {volume.GetName()} with {spec.reference}{where}")
        self._started = time.time()
        self.handle = self.logic.segmentAsync(
            volume,
            spec,
            options,
            outputSegmentation=self.ui.outputSelector.currentNode(),
            probabilityVolume=probabilityVolume,
            onProgress=self.onProgress,
            onFinished=self.onFinished,
            onError=self.onError,
            onLog=self.log,
        )
        if server_model is None:
            params.recentModels = rules.remember(params.recentModels, params.modelPath)
            P.write_parameters(self._parameterNode, params)
            self.ui.modelPathLineEdit.addCurrentPathToHistory()
        self.ui.progressBar.value = 0
        self.pollTimer.start()

    def onPoll(self):
        if self.handle is not None and self.handle.poll():
            self.handle = None
            self.requestSummary()
        if self.summaries.poll():
            self.requestSummary()  # for the path shown now (it may have changed meanwhile)
        if self.runOn.server:
            waiting = self.runOn.poll() and time.time() < self._helloDeadline
        else:
            waiting = self.runner is not None and self.runner.describe() is None and time.time() < self._helloDeadline
        if self.handle is None and not self.summaries.inspecting and not waiting:
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
        probabilityVolume = segmentationNode.GetNodeReference("UNetSigmoidSeg.Probabilities")
        P.set_reference(self._parameterNode, "ProbabilityVolume", probabilityVolume)
        self.ui.outputSelector.setCurrentNode(segmentationNode)
        self.onOutputChanged()  # its thresholds, per-segment sliders and table (also when it was selected already)
        stats = self.logic.statistics(segmentationNode)
        device = segmentationNode.GetAttribute("UNetSigmoidSeg.Device")
        window = segmentationNode.GetAttribute("UNetSigmoidSeg.Window")
        backend = segmentationNode.GetAttribute("UNetSigmoidSeg.Backend")
        self.ui.statusLabel.text = rules.run_summary(stats, time.time() - self._started, device, window, backend)
        self.ui.backendInfoLabel.text = rules.backend_label(backend)
        self.log(self.ui.statusLabel.text)

    def onError(self, exc):
        self.handle = None
        self.ui.progressBar.value = 0
        text, details = rules.error_text(exc)
        self.ui.statusLabel.text = text
        self.log(text + ("\n" + details if details else ""))
        if not isinstance(exc, CancelledError):
            slicer.util.errorDisplay(_("Segmentation failed.") + "\n\n" + text, detailedText=details)

    def modelQuestion(self, server):
        if server or self._parameterNode is None:
            return "", False
        return rules.model_question(self.summaries.info, bindings.read(self.ui, P.read_parameters(self._parameterNode)))

    def updateStatus(self):
        server = self.runOn.server
        path = self.runOn.settings.model if server else self.ui.modelPathLineEdit.currentPath
        state = rules.PanelState(
            volume=self.ui.inputSelector.currentNode() is not None,
            model_path=path,
            model_exists=bool(path) and (server or os.path.exists(path)),
            model_error="" if server else self.summaries.error,
            inspecting=not server and self.summaries.inspecting,
            running=self.handle is not None,
            cancelling=self.handle is not None and self.handle.cancel_reason is not None,
            dependencies_ok=server or self.logic is not None,
            server=server,
            server_problem=self.runOn.problem(),
        )
        text, blocking = self.modelQuestion(server)
        state.model_question = text if blocking else ""
        self.ui.modelQuestionLabel.text = text
        self.ui.modelQuestionLabel.visible = bool(text)
        button = rules.segment_button(state)
        self.ui.segmentButton.text = button.text
        self.ui.segmentButton.enabled = button.enabled
        self.ui.segmentButton.toolTip = button.tooltip
        described = self.runOn.described() if server else (self.runner.describe() if self.runner else None)
        self.ui.dependenciesLabel.text = dependencies.versions_text(self.deps, described)
        self.ui.installDependenciesButton.visible = (
            self.logic is None or bool(self.deps.optional_missing)
        ) and not server
        self.ui.deviceInfoLabel.text = dependencies.device_label(self.ui.deviceComboBox.currentText, described)
        self.ui.showHistogramButton.enabled = self.liveResult(self.ui.outputSelector.currentNode()) is not None
        self.runOn.show()

    # ---------------------------------------------------------------- scene and module life
    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)  # the logic cancels the run (the timer polls it to its end) and drops its cache

    def onSceneEndClose(self, caller, event):
        if getattr(self.host.parent, "isEntered", True):  # a widget made without a parent is a shown window
            self.initializeParameterNode()

    def enter(self):
        self.initializeParameterNode()

    def cleanup(self):
        """Stop the timers, cancel the run, stop the runner: closing or reloading the module leaves no process."""
        self.removeObservers()
        self.pollTimer.stop()
        self.thresholdTimer.stop()
        if self.logic is not None:
            self.logic.cleanup()  # cancels the run and closes the runner
        elif self.runner is not None:
            self.runner.close()
        self.runOn.close()
        self.handle = None
        self.logic = None
        self.runner = None
