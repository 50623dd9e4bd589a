"""Run by ``test_panel.py::test_panel_with_a_worker_never_imports_torch`` in a fresh interpreter (the test process
has torch imported already): opens the panel over the fake Qt widgets with a real background worker, reads a model
summary and runs a segmentation through the worker, and prints, as JSON, which of torch / MONAI / SimpleITK this
process had imported after each step.

    python Testing/widget/panel_without_torch.py MODEL.pt TMPDIR
"""

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "UNetSigmoidSeg")]

import numpy as np  # noqa: E402 - after the path set-up
import pytest  # noqa: E402

import fakeslicer  # noqa: E402
from widget_fixtures import install_python_slicer, load_module_over_fakes  # noqa: E402

HEAVY = ("torch", "monai", "SimpleITK")


def imported():
    return sorted(name for name in HEAVY if name in sys.modules)


def run_until(panel, condition, timeout_s=180.0):
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(panel.ui.statusLabel.text)
        if panel.pollTimer.active:
            panel.pollTimer.fire()
        time.sleep(0.02)


def main(model, tmp):
    import slicer
    import slicer.util

    report = {"at start": imported()}
    with pytest.MonkeyPatch.context() as patch:
        module, scene = load_module_over_fakes(patch)
        install_python_slicer(tmp, patch)
        host = module.UNetSigmoidSegWidget(fakeslicer.module_panel())
        host.setup()
        panel = host.panel
        ui = panel.ui
        report["runner"] = type(panel.runner).__name__
        if panel.runner is None:  # the dependency check failed: say what is missing
            print(json.dumps({**report, "missing": panel.deps.describe_missing()}))
            return
        run_until(panel, lambda: not panel.pollTimer.active)  # the warm worker says hello
        report["after setup"] = imported()
        grid = np.zeros((12, 24, 28), np.float32)  # (K, J, I)
        grid[3:9, 6:18, 7:21] = 1.0  # normalised values: the model records no normalisation
        ui.inputSelector.setCurrentNode(slicer.util.addVolumeFromArray(grid, name="box"))
        ui.deviceComboBox.currentText = "cpu"
        ui.modelPathLineEdit.currentPath = model
        run_until(panel, lambda: not panel.summaries.inspecting)
        report["summary"] = ui.modelSummaryLabel.text
        report["after summary"] = imported()
        ui.segmentButton.click()
        run_until(panel, lambda: panel.handle is None)
        seg = ui.outputSelector.currentNode()
        report["segments"] = seg.GetSegmentation().GetNumberOfSegments() if seg is not None else 0
        report["status"] = ui.statusLabel.text
        report["worker runs"] = panel.runner.describe() is not None
        report["after run"] = imported()
        report["errors"] = list(fakeslicer.ERRORS) + list(fakeslicer.DIALOGS)
        host.cleanup()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
