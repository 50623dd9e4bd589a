"""The panel's behaviour without Qt: debounce, button rules, run options, bindings, dependencies, log forwarding,
resource lookup, model summaries."""

import os
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import tiny_unet
from UNetSigmoidSegLib.contract import ModelInfo, ModelSpec, SegmentOptions
from UNetSigmoidSegLib.contract.options import default_threshold
from UNetSigmoidSegLib.errors import CancelledError, ModelError, OptionError, UserError, WorkerError
from UNetSigmoidSegLib.mrml.parameters import Parameters
from UNetSigmoidSegLib.runners import worker as worker_client
from UNetSigmoidSegLib.runners.inprocess import InProcessRunner
from UNetSigmoidSegLib.widget import bindings, dependencies, resources, rules
from UNetSigmoidSegLib.widget.debounce import Debouncer
from UNetSigmoidSegLib.widget.summary import ModelSummaries
from widget_fixtures import MODULE_DIR, REPO


def load_info(path, trust_bundle=False):
    """The ``ModelInfo`` of a model file, read in this process."""
    return InProcessRunner().inspect(ModelSpec(str(path), trust_bundle=trust_bundle)).wait()


def model_info(**fields):
    values = dict(
        path="m",
        format="checkpoint",
        architecture="UNet",
        in_channels=1,
        out_channels=3,
        activation="softmax",
        activation_source="test",
    )
    values.update(fields)
    return ModelInfo(**values)


# ---------------------------------------------------------------- debounce


def test_debounce_a_drag_costs_one_live_apply_of_the_newest_value_then_one_commit():
    d = Debouncer(50)
    starts = [d.changing(v) for v in (0.5, 0.45, 0.4, 0.35)]
    assert starts == [True, False, False, False]  # the timer is started once, not restarted
    assert d.fire() == 0.35  # live: the newest value
    assert d.fire() is None  # nothing new
    assert d.changing(0.3) is True and d.changing(0.2) is False
    assert d.release(0.2) == 0.2  # release: applied with clean-up, the pending live value dropped
    assert d.fire() is None and not d.timer_running


def test_debounce_release_at_a_value_already_shown_still_commits_once():
    d = Debouncer()
    d.reset(0.5)
    d.changing(0.3)
    assert d.fire() == 0.3
    assert d.release(0.3) == 0.3  # shown live without clean-up: commit with it
    assert d.release(0.3) is None  # nothing changed since
    assert d.release(0.5) == 0.5  # typed back


def test_debounce_tuples_of_per_segment_thresholds():
    d = Debouncer()
    d.reset((0.5, 0.5))
    assert d.changing((0.5, 0.4)) and d.fire() == (0.5, 0.4)
    assert d.release((0.5, 0.4)) == (0.5, 0.4)
    d.reset((0.1, 0.2))
    assert d.release((0.1, 0.2)) is None  # a new result shows its own thresholds: nothing to apply


# ---------------------------------------------------------------- rules


def test_segment_button_explains_every_missing_input_then_becomes_cancel():
    s = rules.PanelState()
    assert rules.segment_button(s) == rules.ButtonState(False, "Segment", "Select an input volume.")
    s.volume = True
    assert "Select a model" in rules.segment_button(s).tooltip and not rules.segment_button(s).enabled
    s.model_path = "/x/model.pt"
    assert rules.segment_button(s).tooltip == "Model not found: /x/model.pt"
    s.model_exists, s.model_error = True, "checkpoint expects 2 input channels — pick …"
    assert rules.segment_button(s).tooltip == s.model_error and not rules.segment_button(s).enabled
    s.model_error, s.inspecting = "", True
    assert rules.segment_button(s).tooltip == "Reading the model…" and not rules.segment_button(s).enabled
    s.inspecting, s.dependencies_ok = False, False
    assert rules.segment_button(s).enabled and "asked before anything is installed" in rules.segment_button(s).tooltip
    s.dependencies_ok = True
    assert rules.segment_button(s) == rules.ButtonState(True, "Segment", rules.segment_button(s).tooltip)
    s.running = True
    assert (rules.segment_button(s).text, rules.segment_button(s).enabled) == ("Cancel", True)
    s.cancelling = True
    assert (rules.segment_button(s).text, rules.segment_button(s).enabled) == ("Cancelling…", False)


def test_threshold_defaults_and_labels_follow_the_activation():
    assert default_threshold("sigmoid") == 0.5 and default_threshold("softmax", model_info().threshold) == 0.0
    assert default_threshold("softmax", model_info(threshold=0.4).threshold) == 0.4
    assert (
        rules.threshold_label("softmax")[0] == "Minimum confidence:"
        and rules.threshold_label("sigmoid")[0] == "Threshold:"
    )
    assert rules.effective_activation("auto", model_info(activation="softmax")) == "softmax"
    assert rules.effective_activation("sigmoid", model_info(activation="softmax")) == "sigmoid"
    info = model_info(
        activation="softmax",
        threshold=None,
        roi_size=[96, 96, 64],
        overlap=0.5,
        sw_batch_size=None,
        blend_mode="constant",
    )
    assert rules.model_defaults(info, "auto") == {
        "threshold": 0.0,
        "segmentThresholds": [],
        "roiSize": [96, 96, 64],
        "overlap": 0.5,
        "blendMode": "constant",
    }
    assert rules.model_defaults(info, "sigmoid")["threshold"] == 0.5


def test_model_defaults_of_the_shipped_demo_bundle_fit_the_parameters():
    demo = resources.demo_files(str(MODULE_DIR))
    assert demo is not None, "Resources/Models/BrainT1UNet and Resources/Data/T1_head.nii.gz are part of the checkout"
    defaults = rules.model_defaults(load_info(demo["model"], False), "auto")
    params = Parameters()
    for field, value in defaults.items():
        assert isinstance(value, type(getattr(params, field))), field
    assert 0.0 <= defaults["threshold"] <= 1.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", None),
        ("  ", None),
        ("96", [96, 96, 96]),
        ("96,96,64", [96, 96, 64]),
        ("96 x 96 x 64", [96, 96, 64]),
        ("128;128;32", [128, 128, 32]),
    ],
)
def test_roi_size_text(text, expected):
    assert rules.parse_roi_size(text) == expected
    if expected:
        assert rules.parse_roi_size(rules.format_roi_size(expected)) == expected


@pytest.mark.parametrize("text", ["abc", "96,96", "0,96,96", "-1", "96,96,96,96", "9.5"])
def test_bad_roi_size_text_says_what_to_type(text):
    with pytest.raises(OptionError, match="one or three positive integers"):
        rules.parse_roi_size(text)


def test_panel_parameters_map_to_the_run_contract_in_one_place(tmp_path):
    params = Parameters(
        modelPath=str(tmp_path / "m.pt"),
        activation="sigmoid",
        threshold=0.3,
        segmentThresholds=[0.2, 0.7],
        roiSize=[64, 64, 64],
        largestComponent=True,
        trustBundle=True,
        createProbabilityVolume=True,
    )
    spec, options, probability_volume = rules.run_request(params)
    assert isinstance(spec, ModelSpec) and isinstance(options, SegmentOptions) and probability_volume is True
    assert spec.path == str(tmp_path / "m.pt") and spec.trust_bundle is True
    assert (
        options.threshold == [0.2, 0.7]
        and options.roi_size == [64, 64, 64]
        and options.cleanup.largest_component is True
    )
    assert SegmentOptions.from_dict(options.to_dict()) == options  # what the worker receives
    assert rules.run_request(Parameters(modelPath="m", threshold=0.3, segmentThresholds=[0.3]))[1].threshold == 0.3
    assert rules.run_request(params, roi_text="")[1].roi_size is None  # the text box wins: empty → model default


def test_normalisation_window_and_multi_label_reach_the_run_and_are_asked_beside_the_summary():
    params = Parameters(
        modelPath="m", normalization="ct", ctWindow=[-57.0, 164.0], activation="sigmoid", multiLabel=True
    )
    options = rules.run_request(params)[1]
    assert (options.normalization, options.ct_window, options.multi_label) == ("ct", [-57.0, 164.0], True)
    assert rules.run_request(Parameters(modelPath="m"))[1].normalization is None  # "model": what the model records
    assert bindings.from_widget("window", "-57, 164") == [-57.0, 164.0] and bindings.from_widget("window", "9 1") == []
    assert bindings.to_widget("window", [-57.0, 164.0]) == "-57 164"
    plain = model_info(out_channels=2, activation="softmax", activation_source="2 output channel(s)")
    text, blocking = rules.model_question(plain, Parameters(activation="sigmoid"))
    assert blocking and "channel 0 is the background" in text  # the engine would refuse it: Segment waits
    text, blocking = rules.model_question(plain, Parameters(activation="sigmoid", multiLabel=True))
    assert not blocking and "does not record how its input was normalised" in text  # asked, not blocking
    assert rules.model_question(plain, Parameters(normalization="ct"))[1]  # a window is needed
    assert rules.model_question(plain, Parameters(normalization="zscore")) == ("", False)
    recorded = model_info(activation="sigmoid", activation_source="model config", preprocessing={"normalization": "ct"})
    assert rules.model_question(recorded, Parameters(activation="sigmoid")) == ("", False)
    bundle = model_info(format="bundle", out_channels=2)
    assert rules.model_question(bundle, Parameters(activation="softmax")) == ("", False)
    state = rules.PanelState(volume=True, model_path=__file__, model_exists=True, model_question="choose")
    assert not rules.segment_button(state).enabled and rules.segment_button(state).tooltip == "choose"


def test_recent_models_most_recent_first_without_duplicates():
    recent = []
    for path in ["a", "b", "a", "c"] + [f"m{i}" for i in range(12)]:
        recent = rules.remember(recent, path)
    assert recent[0] == "m11" and len(recent) == rules.RECENT_MODELS and len(set(recent)) == len(recent)
    assert rules.remember(["a", "b"], "b") == ["b", "a"] and rules.remember(["a"], "") == ["a"]


def test_error_texts_are_actionable_and_name_bugs():
    text, details = rules.error_text(
        ModelError("checkpoint expects 2 input channels, the volume has 1", "pick a 1-channel model")
    )
    assert text == "checkpoint expects 2 input channels, the volume has 1 — pick a 1-channel model" and details == ""
    worker = WorkerError(
        "The worker stopped responding",
        "the next run starts a fresh worker",
        reason="hang",
        log_tail=["line 1", "line 2"],
    )
    text, details = rules.error_text(worker)
    assert "the next run starts a fresh worker" in text and details.endswith("line 1\nline 2")
    assert rules.error_text(CancelledError("cancelled by the user")) == ("cancelled by the user", "")
    text, details = rules.error_text(KeyError("x"))
    assert "bug" in text and "KeyError" in text


def test_progress_and_run_summary_lines():
    assert rules.progress_text("inference", 0.456, "window 3/7") == "inference 46%: window 3/7"
    assert rules.progress_text("load", 1.5) == "load 100%"
    stats = [{"segment": "brain", "volume_ml": 1542.1}, {"segment": "tumour", "volume_ml": 3.25}]
    assert (
        rules.run_summary(stats, 12.34, "cpu: CPU requested")
        == "Done in 12.3 s on cpu (CPU requested): brain 1542.1 mL, tumour 3.25 mL."
    )
    assert rules.run_summary([], 1.0, None) == "Done in 1.0 s on unknown device: no segments."
    assert worker_client.WARM_IDLE_S > 60 > worker_client.COLD_IDLE_S > 0


def test_model_key_changes_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "m.pt"
    assert rules.model_key(str(path), False) is None
    path.write_bytes(b"1")
    key = rules.model_key(str(path), False)
    os.utime(path, ns=(1, 10**18))
    assert rules.model_key(str(path), False) != key and rules.model_key(str(path), True) != rules.model_key(
        str(path), False
    )


# ---------------------------------------------------------------- bindings


class FakeWidget:
    def __init__(self):
        self.connections = []

    def connect(self, signal, slot):
        self.connections.append((signal, slot))


def fake_ui():
    return types.SimpleNamespace(**{name: FakeWidget() for _, name, _ in bindings.BINDINGS})


def test_bindings_round_trip_every_bound_field():
    ui = fake_ui()
    params = Parameters(
        modelPath="/m.pt",
        activation="softmax",
        device="cpu",
        createProbabilityVolume=True,
        largestComponent=True,
        fillHoles=True,
        minIslandMm3=12.5,
        roiSize=[64, 64, 32],
        overlap=0.5,
        swBatchSize=4,
        blendMode="constant",
        amp=False,
        keepWorkerWarm=False,
        trustBundle=True,
    )
    bindings.show(ui, params)
    assert (
        ui.roiSizeLineEdit.text == "64,64,32"
        and ui.modelPathLineEdit.currentPath == "/m.pt"
        and ui.ampCheckBox.checked is False
    )
    assert bindings.read(ui, Parameters()) == Parameters(**{**params.__dict__, "threshold": 0.5})
    ui.roiSizeLineEdit.text = "not a size"
    assert bindings.read(ui, Parameters()).roiSize == []  # stored as "model default"; Segment reports the text
    slot = object()
    bindings.connect(ui, slot)
    for _, name, kind in bindings.BINDINGS:
        assert getattr(ui, name).connections == [(bindings.SIGNALS[kind], slot)]


# ---------------------------------------------------------------- dependencies


def report(**installed):
    return dependencies.check(["monai>=1.3", "psutil>=5"], version_of=lambda name: installed.get(name))


def test_dependency_check_reads_versions_without_importing():
    r = report(torch="2.3.1+cu121", monai="1.3.2", psutil="5.9")
    assert r.ok and [i.name for i in r.items] == ["torch", "monai", "psutil"]
    assert dependencies.versions_text(r) == "torch 2.3.1+cu121 · MONAI 1.3.2 · CUDA: known when the worker starts"
    hello = {"torch": "2.3.1+cu121", "monai": "1.3.2", "cuda": True, "cuda_devices": 2, "python": "3.9.10"}
    assert (
        dependencies.versions_text(r, hello) == "torch 2.3.1+cu121 · MONAI 1.3.2 · CUDA: 2 GPUs · worker Python 3.9.10"
    )
    old = report(torch="1.13.1", monai=None, psutil="5.9")
    assert not old.ok and old.describe_missing() == "torch>=2.1 (installed 1.13.1: too old), monai>=1.3 (not installed)"
    assert dependencies.versions_text(old).startswith("Missing: torch>=2.1")
    real = dependencies.check(dependencies.read_requirements(str(REPO / "Resources" / "requirements.txt")))
    assert real.ok, real.describe_missing()  # this test environment has them all


def test_requirements_agree_with_pyproject():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"{dependencies.TORCH_REQUIREMENT}"' in pyproject
    reqs = dependencies.read_requirements(str(REPO / "Resources" / "requirements.txt"))
    assert not any(r.startswith("torch") for r in reqs), "torch comes from the PyTorch extension, never from pip here"
    monai = [r for r in reqs if r.startswith("monai")]
    assert monai and f'"{monai[0]}"' in pyproject
    dependencies_block = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    missing = [r for r in reqs if f'"{r}"' not in dependencies_block]
    assert not missing, f"in Resources/requirements.txt but not in pyproject's dependencies: {missing}"


class Installer:
    def __init__(self, answer=True, torch_ok=True, after=None):
        self.answer, self.torch_ok, self.after, self.calls = answer, torch_ok, after, []

    def confirm(self, text, details):
        self.calls.append(("ask", text))
        return self.answer

    def install_torch(self, requirement):
        self.calls.append(("torch", requirement))
        return self.torch_ok

    def install_packages(self, requirements):
        self.calls.append(("pip", list(requirements)))

    def ensure(self, r):
        return dependencies.ensure(r, self.confirm, self.install_torch, self.install_packages, lambda: self.after)


def test_nothing_is_installed_without_consent():
    inst = Installer(answer=False)
    with pytest.raises(dependencies.DependencyError) as err:
        inst.ensure(report(torch=None, monai=None, psutil="5.9"))
    assert [c[0] for c in inst.calls] == ["ask"]
    assert "PyTorch extension" in inst.calls[0][1] and "monai>=1.3 (not installed): with pip" in inst.calls[0][1]
    assert "with torchvision" in inst.calls[0][1]  # what the PyTorch extension installs with torch is said too
    message = str(err.value)
    assert message.startswith(
        "Nothing was installed; segmenting needs torch>=2.1 (not installed), monai>=1.3 (not installed)"
    )
    assert (
        "PyTorch Utils" in message
        and "slicer.util.pip_install(['monai>=1.3'])" in message
        and "keeps working" in message
    )


def test_consent_installs_torch_by_the_extension_then_the_rest_by_pip():
    inst = Installer(after=report(torch="2.3.1", monai="1.4.0", psutil="5.9"))
    result = inst.ensure(report(torch=None, monai=None, psutil="5.9"))
    assert result.ok and inst.calls[1:] == [("torch", "torch>=2.1"), ("pip", ["monai>=1.3"])]
    inst = Installer(after=report(torch="2.3.1", monai="1.4.0", psutil="5.9"))
    inst.ensure(report(torch="2.3.1", monai="1.2.0", psutil="5.9"))
    assert [c[0] for c in inst.calls] == ["ask", "pip"]  # torch is fine: the extension is not asked
    ok = report(torch="2.3.1", monai="1.4.0", psutil="5.9")
    inst = Installer()
    assert inst.ensure(ok) is ok and inst.calls == []  # nothing missing: no question


def test_failed_or_incomplete_installs_say_so():
    inst = Installer(torch_ok=False)
    with pytest.raises(dependencies.DependencyError, match="PyTorch was not installed"):
        inst.ensure(report(torch=None, monai="1.4", psutil="5.9"))
    inst = Installer(after=report(torch="2.3.1", monai=None, psutil="5.9"))
    with pytest.raises(dependencies.DependencyError, match="Still missing after the install: monai>=1.3"):
        inst.ensure(report(torch="2.3.1", monai=None, psutil="5.9"))


def with_optional(**installed):
    return dependencies.check(
        ["monai>=1.3"], version_of=lambda name: installed.get(name), optional=["openvino>=2024.4", "onnx>=1.15"]
    )


def test_the_runtime_of_the_fast_cpu_backend_is_an_optional_requirement(tmp_path):
    path = str(REPO / "Resources" / "requirements.txt")
    assert dependencies.read_requirements(path, optional=True) == ["openvino>=2024.4", "onnx>=1.15"]
    required = dependencies.read_requirements(path, optional=False)
    assert "monai>=1.3" in required and not any(r.startswith(("openvino", "onnx")) for r in required)
    assert sorted(dependencies.read_requirements(path)) == sorted(required + ["openvino>=2024.4", "onnx>=1.15"])
    report = dependencies.requirements_report(path)
    assert [i.name for i in report.items if i.optional] == ["openvino", "onnx"]
    # without them the report is still ok: nothing blocks a run, the label says what is missing
    partial = with_optional(torch="2.3.1", monai="1.4.0", onnx="1.17")
    assert partial.ok and partial.missing == [] and [i.name for i in partial.optional_missing] == ["openvino"]
    assert dependencies.versions_text(partial).endswith(" · optional openvino not installed (no OpenVINO backend)")
    assert "optional" not in dependencies.versions_text(partial, {"runner": "remote", "torch": "2.4", "monai": "1.4"})


def test_optional_packages_are_offered_with_the_required_ones_and_never_block():
    inst = Installer(after=with_optional(torch="2.3.1", monai="1.4.0", openvino="2026.4", onnx="1.17"))
    inst.ensure(with_optional(torch="2.3.1"))
    assert [c[0] for c in inst.calls] == ["ask", "pip", "pip"]  # one question; required first, optional apart
    assert "openvino>=2024.4 (not installed): with pip (optional: faster runs on the CPU)" in inst.calls[0][1]
    assert inst.calls[1:] == [("pip", ["monai>=1.3"]), ("pip", ["openvino>=2024.4", "onnx>=1.15"])]

    class NoWheel(Installer):
        def install_packages(self, requirements):
            super().install_packages(requirements)
            if requirements[0].startswith("openvino"):
                raise RuntimeError("No matching distribution found for openvino>=2024.4")

    inst = NoWheel(after=with_optional(torch="2.3.1", monai="1.4.0"))
    after = inst.ensure(with_optional(torch="2.3.1"))  # the optional install failed: no error, a note
    assert after.ok and after.note.startswith("Optional openvino>=2024.4 (not installed), onnx>=1.15 (not installed)")
    assert "No matching distribution" in after.note and "OpenVINO CPU backend is not available" in after.note


def test_optional_packages_alone_are_offered_only_on_request():
    only_optional = with_optional(torch="2.3.1", monai="1.4.0")
    inst = Installer()
    assert inst.ensure(only_optional) is only_optional and inst.calls == []  # Segment: no question
    inst = Installer(answer=False)
    report_ = dependencies.ensure(
        only_optional, inst.confirm, inst.install_torch, inst.install_packages, lambda: None, optional=True
    )
    assert report_ is only_optional and [c[0] for c in inst.calls] == ["ask"]  # declined: nothing, no error
    assert inst.calls[0][1].startswith("UNetSigmoidSeg runs networks faster on the CPU with OpenVINO (optional")
    done = with_optional(torch="2.3.1", monai="1.4.0", openvino="2026.4", onnx="1.17")
    inst = Installer(after=done)
    got = dependencies.ensure(
        only_optional, inst.confirm, inst.install_torch, inst.install_packages, lambda: inst.after, optional=True
    )
    assert got is done and not got.note and inst.calls[1:] == [("pip", ["openvino>=2024.4", "onnx>=1.15"])]


def test_slicer_install_functions_use_the_real_apis(monkeypatch):
    """With stand-ins for PyTorchUtils and slicer.packaging / slicer.util, as their sources define them."""
    calls = []

    class PyTorchUtilsLogic:
        def installTorch(
            self,
            askConfirmation=False,
            forceComputationBackend=None,
            torchVersionRequirement=None,
            torchvisionVersionRequirement=None,
        ):
            calls.append(("installTorch", askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.4.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    assert dependencies.slicer_install_torch("torch>=2.1") is True
    assert calls == [("installTorch", False, ">=2.1")]  # the user already agreed in ensure()
    monkeypatch.delitem(sys.modules, "PyTorchUtils")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "PyTorchUtils" not in p])
    with pytest.raises(dependencies.DependencyError, match="Extensions Manager"):
        dependencies.slicer_install_torch("torch>=2.1")

    import slicer
    import slicer.util

    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = lambda reqs, prompt_install=True, requester=None, **kw: calls.append(
        ("pip_ensure", reqs, prompt_install, requester)
    )
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    dependencies.slicer_install_packages(["monai>=1.3"])
    assert calls[-1] == ("pip_ensure", ["monai>=1.3"], False, "UNetSigmoidSeg")
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer < 5.12: no slicer.packaging
    monkeypatch.delattr(slicer, "packaging")
    monkeypatch.setattr(slicer.util, "pip_install", lambda reqs: calls.append(("pip_install", reqs)))
    dependencies.slicer_install_packages(["monai>=1.3", "psutil>=5"])
    assert calls[-1] == ("pip_install", ["monai>=1.3", "psutil>=5"])


def test_device_labels_say_what_each_choice_means_in_the_worker():
    assert dependencies.device_label("auto") == "decided when the worker starts"
    gpu = {"torch": "2.3.1+cu121", "cuda": True, "cuda_devices": 1}
    cpu = {"torch": "2.3.1+cpu", "cuda": False, "cuda_devices": 0}
    assert dependencies.device_label("auto", gpu) == "→ CUDA (1 NVIDIA GPU)"
    assert dependencies.device_label("cuda", gpu) == "CUDA: 1 NVIDIA GPU"
    assert dependencies.device_label("auto", cpu).startswith("→ CPU") and "2.3.1+cpu" in dependencies.device_label(
        "auto", cpu
    )
    assert "runs will fail — pick auto or cpu" in dependencies.device_label("cuda", cpu)
    assert dependencies.device_label("cpu", gpu) == "CPU" and "MPS" in dependencies.device_label("mps", cpu)
    assert dependencies.pick_python(lambda name: f"/opt/Slicer/bin/{name}") == "/opt/Slicer/bin/PythonSlicer"


# ---------------------------------------------------------------- log forwarding


class FakeJob:
    """A ``Job`` of the run contract, scripted: each ``poll`` returns the next batch of messages."""

    def __init__(self, batches):
        self.batches, self.cancelled, self.id, self.info = list(batches), False, "fake", {}

    @property
    def done(self):
        return not self.batches

    def poll(self):
        return self.batches.pop(0) if self.batches else []

    def cancel(self):
        self.cancelled = True

    def wait(self, timeout=None, progress=None, log=None):
        raise CancelledError("cancelled by the test")


def test_the_logic_passes_log_and_warning_lines_of_a_run_to_on_log(tmp_path):
    from conftest import blob_volume
    from mrml_helpers import add_volume
    from UNetSigmoidSegLib.contract.messages import Log, Progress
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    scene = create_headless_scene()
    job = FakeJob(
        [
            [Progress("s", 0.1, ""), Log("loaded")],
            [Log("doubled sigmoid", "warning")],
        ]
    )
    runner = types.SimpleNamespace(runs_here=True, submit=lambda volume, model, options: job, close=lambda: None)
    (tmp_path / "m.pt").write_bytes(b"x")
    seen, progress = [], []
    handle = UNetSigmoidSegLogic(scene, runner=runner).segmentAsync(
        add_volume(scene, blob_volume((8, 8, 4))),
        str(tmp_path / "m.pt"),
        onLog=seen.append,
        onProgress=lambda *a: progress.append(a),
    )
    assert handle.poll() is False and seen == ["loaded"] and progress == [("s", 0.1, "")]
    assert handle.poll() is True and seen == ["loaded", "warning: doubled sigmoid"]
    assert isinstance(handle.error, CancelledError)


# ---------------------------------------------------------------- resources and reload


def test_resources_are_found_in_the_installed_and_in_the_source_layout(tmp_path):
    src_module = tmp_path / "repo" / "UNetSigmoidSeg"
    (tmp_path / "repo" / "Resources" / "UI").mkdir(parents=True)
    src_module.mkdir()
    (tmp_path / "repo" / "Resources" / "UI" / "X.ui").write_text("<ui/>")
    assert resources.resource_path(str(src_module), "UI/X.ui") == str(tmp_path / "repo" / "Resources" / "UI" / "X.ui")
    (src_module / "Resources" / "UI").mkdir(parents=True)
    (src_module / "Resources" / "UI" / "X.ui").write_text("<ui/>")
    assert resources.resource_path(str(src_module), "UI/X.ui") == str(
        src_module / "Resources" / "UI" / "X.ui"
    )  # installed first
    assert resources.resource_path(str(src_module), "UI/none.ui") == str(src_module / "Resources" / "UI" / "none.ui")
    assert resources.demo_files(str(src_module)) is None
    demo = resources.demo_files(str(MODULE_DIR))
    assert demo and Path(demo["model"]).name == "BrainT1UNet"


def test_purge_modules_drops_only_the_library():
    modules = {"UNetSigmoidSegLib": 1, "UNetSigmoidSegLib.widget.rules": 2, "UNetSigmoidSegLibOther": 3, "numpy": 4}
    assert resources.purge_modules(modules) == ["UNetSigmoidSegLib", "UNetSigmoidSegLib.widget.rules"]
    assert modules == {"UNetSigmoidSegLibOther": 3, "numpy": 4}


# ---------------------------------------------------------------- model summaries


class LoadJob:
    def __init__(self, result=None, error=None):
        self.result, self.error, self.done = result, error, False

    def poll(self):
        return []

    def wait(self, timeout=None):
        if self.error:
            raise self.error
        return self.result


def test_summary_through_the_worker_is_cached_and_serialised(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(tiny_unet(out_channels=2).state_dict(), path)
    info = load_info(str(path), False)
    jobs = []
    worker = types.SimpleNamespace(inspect=lambda spec: jobs.append((spec, LoadJob(info))) or jobs[-1][1])
    s = ModelSummaries()
    assert s.request(str(path), False, worker) == "Reading the model…" and s.inspecting
    assert jobs[0][0] == ModelSpec(str(path), trust_bundle=False)
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    assert (
        s.request(str(other), False, worker) == "Reading the model after the current job…" and len(jobs) == 1
    )  # one job at a time
    assert s.poll() is False
    jobs[0][1].done = True
    assert s.poll() is True and not s.inspecting
    text = s.request(str(path), False, worker)
    assert re.match(r"checkpoint: UNet.*1→2 channels, activation softmax", text) and len(jobs) == 1 and s.info == info
    assert s.request(str(path), False, worker, busy=True) == text  # cached: shown even during a run


def test_summary_errors_are_the_actionable_model_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    s = ModelSummaries()
    text = s.request(str(bad), False, InProcessRunner())  # in-process: answered at once
    assert s.error == text and isinstance(s.cache[rules.model_key(str(bad), False)][1], UserError) and " — " in text
    job = LoadJob(error=ModelError("bundle needs trust", "tick Trust bundle code"))
    worker = types.SimpleNamespace(inspect=lambda spec: job)
    s2 = ModelSummaries()
    s2.request(str(bad), True, worker)
    job.done = True
    s2.poll()
    assert s2.request(str(bad), True, worker) == "bundle needs trust — tick Trust bundle code" == s2.error
    assert s2.request("", False, worker) == "" and s2.error == ""
    assert s2.request(str(tmp_path / "none.pt"), False, worker).startswith("Not found:")
    assert ModelSummaries().request(str(bad), False) == "Install the dependencies to read the model."
