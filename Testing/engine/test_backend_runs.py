"""CPU backends (issue #13) in a run: cancel, progress, the memory guard, auto's choice, the worker keeping the
compiled model warm, the CLI, the contract. Tiny real MONAI UNets; the backends' fidelity is in test_backends.py."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import blob_volume, tiny_unet
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume
from UNetSigmoidSegLib.contract.options import BACKENDS
from UNetSigmoidSegLib.contract.result import BackendChoice, SegmentResult, Window
from UNetSigmoidSegLib.engine.backends import choose as backends
from UNetSigmoidSegLib.engine.loading.model import LoadedModel, ModelInfo, load_model
from UNetSigmoidSegLib.engine.running import pipeline
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import CancelledError, InputError, OptionError
from UNetSigmoidSegLib.mrml.parameters import Parameters
from UNetSigmoidSegLib.widget import rules

FAST = ("onednn", "openvino")
WINDOW = re.compile(r"^window (\d+)/(\d+)")


def _model(net=None, seed=0, out_channels=1):
    net = net if net is not None else tiny_unet(channels=(4, 8, 16), seed=seed, out_channels=out_channels)
    info = ModelInfo("mem", "checkpoint", "UNet", 1, out_channels, "sigmoid", "test", size_divisor=4)
    info.network_args = {"seed": seed, "out_channels": out_channels}
    return LoadedModel(net, info)


def _volume(shape=(48, 40, 32)):
    return Volume(blob_volume(shape)[None], np.diag([1.2, 0.9, 2.0, 1.0]))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "backends"


# ---------------------------------------------------------------- progress and cancel, as on PyTorch


@pytest.mark.parametrize("backend", FAST)
def test_progress_counts_the_same_windows_as_pytorch(backend, cache):
    model = _model(seed=1)
    seen = {}
    for name in ("torch", backend):
        messages = []
        opts = SegmentOptions(device="cpu", backend=name, roi_size=[16, 16, 16], overlap=0.5)
        result = segment(_volume(), model, opts, progress=lambda s, f, m, into=messages: into.append(m))
        assert result.backend.backend == name
        seen[name] = [tuple(map(int, WINDOW.match(m).groups())) for m in messages if WINDOW.match(m)]
    assert seen[backend] == seen["torch"] and len(seen["torch"]) > 30
    assert [i for i, _n in seen["torch"]] == list(range(1, len(seen["torch"]) + 1))


@pytest.mark.parametrize("backend", FAST)
def test_cancel_between_windows_as_on_pytorch(backend, cache):
    model = _model(seed=2)
    opts = SegmentOptions(device="cpu", backend=backend, roi_size=[16, 16, 16], overlap=0.5)
    segment(_volume(), model, opts)  # prepared and warm
    done = []

    def progress(stage, fraction, message):
        if WINDOW.match(message):
            done.append(message)

    with pytest.raises(CancelledError, match="during inference"):
        segment(_volume(), model, opts, progress=progress, should_cancel=lambda: len(done) >= 5)
    assert len(done) == 5  # the window running when cancel came finished; no other started


def test_cancel_while_preparing_a_backend(cache):
    """Preparing is a sequence of cancellable steps (export, compile, check): a cancel stops before the next."""
    model = _model(seed=3)
    asked = []

    def progress(stage, fraction, message):
        if message.startswith("exporting"):
            asked.append(message)

    with pytest.raises(CancelledError, match="during inference"):
        segment(
            _volume(),
            model,
            SegmentOptions(device="cpu", backend="openvino", roi_size=[16, 16, 16]),
            progress=progress,
            should_cancel=lambda: bool(asked),
        )
    assert asked and not model.backends  # nothing half-prepared is kept


def test_memory_guard_refuses_before_any_export(exports, cache, monkeypatch):
    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: 2**20)
    before = len(exports)
    with pytest.raises(InputError, match="needs about"):
        segment(_volume(), _model(seed=12), SegmentOptions(device="cpu", backend="openvino", roi_size=[16, 16, 16]))
    assert len(exports) == before and not cache.exists()


class Exhausted:
    """Stands in for an OpenVINO infer request whose allocation fails (as ``std::bad_alloc`` surfaces in Python)."""

    def infer(self, *args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:223: std::bad_alloc")


def test_out_of_memory_in_a_runtime_is_the_engines_error(cache):
    """Memory running out inside OpenVINO during the windows is the engine's 'Out of memory on the CPU' (exit 2 with
    the memory hint), as it is for PyTorch's allocator."""
    model = _model(seed=4)
    opts = SegmentOptions(device="cpu", backend="openvino", roi_size=[16, 16, 16])
    segment(_volume(), model, opts)
    (prepared,) = model.backends.values()
    prepared.forward.request = Exhausted()
    with pytest.raises(InputError, match="Out of memory on the CPU") as caught:
        segment(_volume(), model, opts)
    assert "--roi-size" in caught.value.hint


# ---------------------------------------------------------------- auto


def test_auto_measures_once_then_remembers(exports, cache, monkeypatch):
    monkeypatch.setenv("UNETSEG_AUTO_MIN_SECONDS", "0")
    net = tiny_unet(channels=(4, 8, 16), seed=5)
    opts = SegmentOptions(device="cpu", roi_size=[32, 32, 32])
    first = segment(_volume(), _model(net, seed=5), opts)
    choice = first.backend
    assert choice.requested == "auto" and choice.backend in BACKENDS[1:]
    assert choice.reason.startswith("auto: fastest on a probe window: ")
    assert all(name in choice.reason for name in ("torch", "onednn", "openvino")), choice.reason
    before = len(exports)
    second = segment(_volume(), _model(net, seed=5), opts)  # a fresh process would see the same
    assert second.backend.backend == choice.backend and "(measured on an earlier run)" in second.backend.reason
    assert len(exports) == before
    assert (second.probabilities.quantized.astype(int) - first.probabilities.quantized).max() <= 1


def test_auto_keeps_short_runs_on_pytorch(exports, cache, monkeypatch):
    monkeypatch.delenv("UNETSEG_AUTO_MIN_SECONDS")  # the product's default
    before = len(exports)
    result = segment(_volume(), _model(seed=6), SegmentOptions(device="cpu", roi_size=[16, 16, 16]))
    assert (
        result.backend.backend == "torch" and "faster backends are prepared for runs over 1 s" in result.backend.reason
    )
    assert len(exports) == before and not result.warnings


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_gpu_runs_stay_on_pytorch(exports, device, cache):
    """The policy itself (no GPU needed): CUDA / MPS runs use PyTorch; auto silently, an explicit CPU backend with a
    warning; nothing is exported."""
    model, image = _model(seed=7), torch.zeros(1, 1, 32, 32, 32)
    window = Window([16, 16, 16], 0.25, 1, "gaussian")
    before = len(exports)
    forward, choice, warnings = backends.prepare(model, image, window, "auto", device, 8, print, print)
    assert forward is None and choice.backend == "torch" and not warnings
    forward, choice, warnings = backends.prepare(model, image, window, "openvino", device, 8, print, print)
    assert forward is None and choice.backend == "torch" and "runs on the CPU" in warnings[0]
    assert len(exports) == before and not model.backends


@pytest.mark.gpu
def test_auto_on_cuda_runs_pytorch_with_amp(cache):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (run on the device machine)")
    result = segment(_volume(), _model(seed=8), SegmentOptions(device="cuda", roi_size=[16, 16, 16]))
    assert result.backend.backend == "torch" and result.placement == "CUDA" and "cuda" in result.backend.reason


# ---------------------------------------------------------------- through the worker, the CLI, the contract


def test_worker_keeps_the_compiled_model_warm(cache, tmp_path):
    from UNetSigmoidSegLib.runners.worker import WorkerRunner

    path = str(tmp_path / "m.pt")
    torch.save(tiny_unet(channels=(4, 8, 16), seed=9).state_dict(), path)
    runner = WorkerRunner(temp_root=str(tmp_path))
    opts = SegmentOptions(device="cpu", backend="openvino", roi_size=[16, 16, 16])
    try:
        first = runner.submit(_volume(), ModelSpec(path), opts).wait(timeout=300)
        job = runner.submit(_volume(), ModelSpec(path), opts)
        second = job.wait(timeout=300)
    finally:
        runner.close()
    assert first.backend.backend == "openvino" and first.backend.source == "exported"
    assert second.backend.source == "warm" and job.info.cache_hit and job.info.load_count == 1
    assert second.timings["backend_s"] < 0.05 and np.array_equal(second.masks, first.masks)
    assert len(list(cache.glob("*.onnx"))) == 1  # exported by the worker into the private cache


def test_cli_backend_flag_json_and_line(tmp_path, model_file, volume_file, capsys, cache):
    model, vol = model_file(), volume_file()
    argv = ["segment", vol, "--model", model, "-o", str(tmp_path / "o.seg.nrrd"), "--device", "cpu", "--overwrite"]
    assert main(argv + ["--backend", "openvino", "--roi-size", "16", "--json", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)["cases"][0]
    assert row["backend"]["backend"] == "openvino" and row["backend"]["requested"] == "openvino"
    assert row["backend"]["runtime"].startswith("openvino ") and row["timings_s"]["backend_s"] >= 0
    assert row["backend"]["checked"] >= 1 and row["backend"]["max_abs_diff"] <= row["backend"]["tolerance"]
    assert main(argv + ["--backend", "onednn", "--roi-size", "16"]) == 0
    captured = capsys.readouterr()
    line = re.search(
        r"cpu, onednn \((\d+) of (\d+) window batches checked against PyTorch\), roi 16×16×16", captured.out
    )
    assert line and 1 <= int(line[1]) <= int(line[2]), captured.out
    assert "backend: onednn (asked for)" in captured.err
    assert main(argv + ["--backend", "fast"]) == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_contract_carries_the_backend():
    assert SegmentOptions(backend="OpenVINO").backend == "openvino"
    with pytest.raises(OptionError, match="Unknown backend"):
        SegmentOptions(backend="cuda")
    opts = SegmentOptions(backend="onednn")
    assert SegmentOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts
    result = segment(_volume((20, 18, 12)), _model(seed=10), SegmentOptions(device="cpu", backend="torch"))
    fields, arrays = result.to_wire()
    back = SegmentResult.from_wire(json.loads(json.dumps(fields)), arrays)
    assert back.backend == result.backend == BackendChoice("torch", "torch", "asked for", back.backend.runtime)
    legacy = dict(fields)
    del legacy["backend"]  # a result from a worker of the previous version
    assert SegmentResult.from_wire(legacy, arrays).backend is None
    assert tuple(v for v, _tip in rules.BACKENDS) == BACKENDS and all(tip for _v, tip in rules.BACKENDS)
    spec, options, _prob = rules.run_request(Parameters(modelPath="m.pt", backend="onednn"))
    assert options.backend == "onednn"
    assert rules.run_summary([], 1.0, "cpu: asked", "roi 96", "openvino (asked for)") == (
        "Done in 1.0 s on cpu (asked) using openvino with roi 96: no segments."
    )
    assert rules.backend_label("openvino (auto: fastest)") == "Last run: openvino (auto: fastest)"


def test_quantize_rounds_exactly_as_before():
    """The probability cache's quantisation (made faster for the CPU backends' end-to-end time) rounds half to even
    exactly as ``rint`` straight into uint8 did, for float32 and float64 probabilities."""
    from UNetSigmoidSegLib.contract.result import quantize

    for dtype in (np.float32, np.float64):
        p = np.linspace(-0.1, 1.1, 1_000_001).astype(dtype)
        p[:3] = [0.5 / 255, 1.5 / 255, 2.5 / 255]  # exact halves: to even
        want = np.empty(p.shape, np.uint8)
        np.rint(np.clip(p, 0.0, 1.0) * 255, out=want, casting="unsafe")
        got = quantize(p)
        assert got.dtype == np.uint8 and np.array_equal(got, want) and list(got[:3]) == list(want[:3])


def test_loaded_models_are_keyed_by_their_spec_and_exports_by_their_content(tmp_path, cache):
    """The runners' model cache key travels with the model; the export's key is what the network computes (a MONAI
    network's key holds no path: a copy reuses it), whether or not the model came through a runner."""
    from UNetSigmoidSegLib.runners.inprocess import InProcessRunner

    path = str(tmp_path / "m.pt")
    torch.save(tiny_unet(channels=(4, 8, 16), seed=11).state_dict(), path)
    runner = InProcessRunner()
    loaded = runner.model(ModelSpec(path))
    assert loaded.spec_key == ModelSpec(path).cache_key() and load_model(path).spec_key is None
    key, fields = backends.backend_key(loaded, [1, 1, 16, 16, 16])
    assert fields["model"] is None and fields["input"] == [1, 1, 16, 16, 16] and len(fields["weights"]) == 64
    assert backends.backend_key(load_model(path), [1, 1, 16, 16, 16])[0] == key
