"""The in-Slicer self-test, mixed into ``UNetSigmoidSegTest(ScriptedLoadableModuleTest)`` in the module file.

Runs only inside 3D Slicer (Developer mode → Reload and Test, the Self Tests module, or ctest of a
Slicer build): the logic through a real worker process, then the panel — selectors, Segment, a
debounced slider drag. Needs torch and MONAI in Slicer's Python: without them it fails saying what to install,
except in Slicer's testing mode (``--testing``, as ctest runs it on a build machine), where each test is skipped
with that message instead. Slicer is imported inside the methods, so this file imports anywhere.
"""

import os
import tempfile
import time
import unittest

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE_KJI = (24, 36, 40)


class SelfTest:
    """Test methods for a ``ScriptedLoadableModuleTest`` subclass (uses its asserts and ``delayDisplay``)."""

    def setUp(self):
        import slicer

        from .dependencies import requirements_report
        from .resources import resource_path

        slicer.mrmlScene.Clear()
        report = requirements_report(resource_path(MODULE_DIR, "requirements.txt"))
        if report.ok:
            return
        missing = report.describe_missing()
        if slicer.app.testingEnabled():  # a build machine's ctest: Slicer without the PyTorch extension and MONAI
            raise unittest.SkipTest(
                f"UNetSigmoidSeg self-test skipped: Slicer's Python lacks {missing}. Install the PyTorch extension and "
                "press Install… in the module panel (or pip_install them) to run it."
            )
        self.fail(f"Install the dependencies first (module panel: Install…): {missing}")

    def runTest(self):
        self.setUp()
        self.test_LogicThroughWorker()
        self.setUp()
        self.test_Panel()

    def makeInputs(self):
        """A volume with a bright ellipsoid (oblique spacing) and a tiny random 2-output MONAI UNet checkpoint, with
        the JSON beside it that records its input normalisation."""
        import numpy as np
        import slicer
        import torch
        from monai.networks.nets import UNet

        k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE_KJI], indexing="ij")
        array = (100.0 * ((i / 0.6) ** 2 + (j / 0.5) ** 2 + (k / 0.7) ** 2 < 1)).astype(np.float32)
        volume = slicer.util.addVolumeFromArray(array, name="UNetSigmoidSegTest")
        volume.SetSpacing(1.2, 0.8, 2.5)
        torch.manual_seed(0)
        path = os.path.join(tempfile.mkdtemp(prefix="UNetSigmoidSegTest-"), "tiny_unet.pt")
        torch.save(UNet(3, 1, 2, (4, 8, 16), (2, 2), num_res_units=1).eval().state_dict(), path)
        with open(os.path.splitext(path)[0] + ".json", "w") as f:  # normalisation and activation, recorded as users do
            f.write('{"normalization": "zscore", "activation": "sigmoid"}')
        return volume, path

    def test_LogicThroughWorker(self):
        import slicer

        from ..mrml.logic import UNetSigmoidSegLogic
        from ..runners.worker import WorkerRunner
        from .dependencies import pick_python

        volume, model = self.makeInputs()
        python = pick_python()
        self.assertIsNotNone(python, "PythonSlicer is not on PATH")
        worker = WorkerRunner(python_executable=python, idle_timeout_s=30)
        logic = UNetSigmoidSegLogic(slicer.mrmlScene, runner=worker)
        try:
            seg = logic.segment(volume, model, activation="sigmoid", threshold=0.5, device="cpu")
            self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 2)
            self.assertIsNotNone(worker.hello, "the run did not go through the worker")
            counts = {}
            for t in (0.0, 0.5, 1.0):
                logic.setThreshold(seg, t)
                counts[t] = [s["voxels"] for s in logic.statistics(seg)]
            n = SHAPE_KJI[0] * SHAPE_KJI[1] * SHAPE_KJI[2]
            self.assertEqual(counts[0.0], [n, n])
            self.assertTrue(all(a >= b >= c for a, b, c in zip(counts[0.0], counts[0.5], counts[1.0])), counts)
            self.assertNotEqual(counts[0.0], counts[1.0])
        finally:
            logic.cleanup()
            worker.close()
        self.assertIsNone(worker.pid, "the worker process outlived close()")
        self.delayDisplay("Logic through the worker: passed")

    def test_Panel(self):
        import slicer

        from ..mrml.parameters import read_parameters
        from .resources import demo_files

        slicer.util.selectModule("UNetSigmoidSeg")
        widget = slicer.util.getModuleWidget("UNetSigmoidSeg").panel
        demo = demo_files(MODULE_DIR)
        volume, model = (slicer.util.loadVolume(demo["image"]), demo["model"]) if demo else self.makeInputs()
        widget.ui.inputSelector.setCurrentNode(volume)
        widget.ui.outputSelector.setCurrentNode(None)
        widget.ui.deviceComboBox.currentText = "cpu"
        widget.ui.modelPathLineEdit.currentPath = model
        self.waitFor(lambda: not widget.summaries.inspecting, "the model summary")
        self.assertTrue(widget.ui.segmentButton.enabled, widget.ui.segmentButton.toolTip)
        widget.ui.segmentButton.click()
        self.assertEqual(widget.ui.segmentButton.text, "Cancel")
        self.waitFor(lambda: widget.handle is None, "the segmentation")
        seg = widget.ui.outputSelector.currentNode()
        self.assertIsNotNone(seg, widget.ui.statusLabel.text)
        before = [s["voxels"] for s in widget.logic.statistics(seg)]
        for value in (0.45, 0.4, 0.3, 0.2):  # a drag: re-thresholded live, at most every 50 ms
            widget.onThresholdChanging(value)
            slicer.app.processEvents()
        self.waitFor(lambda: not widget.thresholdTimer.active, "the debounced threshold")
        widget.ui.thresholdSlider.value = 0.2  # the release: applied with clean-up and saved
        after = [s["voxels"] for s in widget.logic.statistics(seg)]
        self.assertTrue(all(a >= b for a, b in zip(after, before)) and after != before, (before, after))
        self.assertAlmostEqual(read_parameters(widget._parameterNode).threshold, 0.2)
        self.delayDisplay("Panel: passed")

    def waitFor(self, condition, what, timeout_s=300.0):
        import slicer

        deadline = time.time() + timeout_s
        while not condition():
            self.assertLess(time.time(), deadline, f"timed out waiting for {what}")
            slicer.app.processEvents()
            time.sleep(0.02)
