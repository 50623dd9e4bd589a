"""CPU backends (issue #13): the same result as PyTorch on real CT and MR, the export cache, and every fallback.

Each backend runs the very network the engine loaded (state_dict UNet, TorchScript, the demo bundle), through the
same ``segment()``; its result is compared with ``backend="torch"`` on the same input: Dice ≥ 0.999 per segment (the
reference non-trivial), cached probabilities within one uint8 step (1/255), float probabilities within 1/255.
Tiny real MONAI UNets keep exports well under a second.
"""

import os
import stat
import sys

import numpy as np
import pytest
import torch
from fidelity_helpers import CT, MR, T1, dice, random_unet, save_layout, save_torchscript

from conftest import REPO, shared_data
from UNetSigmoidSegLib.contract.model import ModelInfo
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.contract.result import Window
from UNetSigmoidSegLib.engine.backends import cache as backend_cache
from UNetSigmoidSegLib.engine.backends import choose as backends
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.model import LoadedModel, load_model
from UNetSigmoidSegLib.engine.running.inference import run_sliding_window
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.engine.running.probabilities import activate

PREPROCESS = {
    CT: dict(normalization="ct", ct_window=[-57, 164]),
    MR: dict(normalization="zscore"),
    T1: dict(normalization="zscore"),
}
BUNDLE = str(REPO / "Resources" / "Models" / "BrainT1UNet")


def run(model, data, backend, log=None, **options):
    """``segment()`` of a real image with ``backend``."""
    opts = SegmentOptions(device="cpu", backend=backend, **dict(PREPROCESS.get(data, {}), **options))
    return segment(read_volume(str(shared_data(*data))), model, opts, log=log)


def assert_same(got, want):
    """Dice ≥ 0.999 per segment (reference non-trivial) and cached probabilities within one step of 1/255."""
    assert got.masks.shape == want.masks.shape and got.activation == want.activation
    for a, b in zip(got.masks, want.masks):
        assert 0 < b.sum() < b.size, "the reference segmentation must not be trivial"
        assert dice(a, b) >= 0.999, f"Dice {dice(a, b):.5f} against PyTorch"
    step = np.abs(got.probabilities.quantized.astype(int) - want.probabilities.quantized.astype(int)).max()
    assert step <= 1, f"probabilities differ by {step}/255"
    if want.probabilities.argmax is not None:
        assert (got.probabilities.argmax == want.probabilities.argmax).mean() >= 0.999


# ---------------------------------------------------------------- the same result as PyTorch

CASES = {
    # name: (data, network kwargs, saved as, options)
    "state_dict UNet, CT, softmax, roi 64×64×16": (
        CT,
        dict(out_channels=2, channels=(4, 8, 16, 32), res_units=2, seed=1),
        "plain",
        dict(roi_size=[64, 64, 16]),
    ),
    "state_dict UNet, MR, 3 sigmoid outputs, batch of 3 windows (a smaller last batch)": (
        MR,
        dict(out_channels=3, channels=(4, 8, 16), res_units=1, seed=2, norm="instance"),
        "dataparallel",
        dict(roi_size=[48, 48, 16], sw_batch_size=3, activation="sigmoid", multi_label=True),
    ),
    "TorchScript (script), CT, roi 64×64×16": (
        CT,
        dict(out_channels=2, channels=(4, 8, 16, 32), res_units=2, seed=3),
        "script",
        dict(roi_size=[64, 64, 16]),
    ),
    "TorchScript (trace), MR, strides (2, 1, 2)": (
        MR,
        dict(channels=(4, 8, 16, 32), strides=(2, 1, 2), res_units=0, seed=4),
        "trace",
        dict(roi_size=[64, 64, 16]),
    ),
    "2-D UNet, axial CT slices, batches of 4 slices": (
        CT,
        dict(spatial_dims=2, out_channels=3, channels=(4, 8, 16, 32), res_units=1, seed=5),
        "plain",
        dict(roi_size=[128, 112], sw_batch_size=4),
    ),
    "2-D TorchScript (script) UNet, T1 along axis 1": (
        T1,
        dict(spatial_dims=2, channels=(4, 8, 16), res_units=2, seed=6),
        "script",
        dict(roi_size=[64, 64], slice_axis=1),
    ),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backend-models")
    paths = {}
    for i, (name, (_data, kwargs, layout, _opts)) in enumerate(CASES.items()):
        net = random_unet(**kwargs)
        if layout in ("script", "trace"):
            paths[name] = save_torchscript(net, folder / f"m{i}.ts", layout, kwargs.get("spatial_dims", 3))
        else:
            paths[name] = save_layout(net, folder / f"m{i}.pt", layout)
    return paths


@pytest.mark.parametrize("backend", ["openvino", "onednn"])
@pytest.mark.parametrize("name", list(CASES))
def test_same_result_as_pytorch(name, backend, saved_models):
    data, _kwargs, layout, opts = CASES[name]
    model = load_model(saved_models[name])
    want = run(model, data, "torch", **opts)
    lines = []
    got = run(model, data, backend, log=lines.append, **opts)
    assert want.backend.backend == "torch" and got.window == want.window
    if backend == "onednn" and layout in ("script", "trace"):  # TorchScript cannot be redirected: said, PyTorch runs
        assert got.backend.backend == "torch" and "TorchScript" in got.backend.reason
        assert any("backend onednn not used" in w and "TorchScript" in w for w in got.warnings)
    else:
        assert got.backend.backend == backend and got.backend.requested == backend, got.backend
        assert not any("backend" in w for w in got.warnings)
    assert sum(line.startswith("backend: ") for line in lines) == 1, lines
    assert_same(got, want)
    again = got.rethreshold(0.3)  # the probability cache re-thresholds as PyTorch's does
    assert all(dice(a, b) >= 0.999 for a, b in zip(again, want.rethreshold(0.3)) if b.any())


@pytest.mark.parametrize("backend", ["openvino", "onednn"])
def test_demo_bundle_on_real_mr(backend):
    """The demo bundle (trained weights, its own preprocessing, 96³ windows) on the real T1 head MRI."""
    model = load_model(BUNDLE)
    want = run(model, T1, "torch")
    got = run(model, T1, backend)
    assert got.backend.backend == backend
    assert_same(got, want)


def test_float_probabilities_and_logits_within_tolerance():
    """Below the cache: the blended logits of each backend are within the validation tolerance of PyTorch's, and
    the float probabilities within 1/255 (MONAI's sliding window, Gaussian blending, real CT)."""
    volume = read_volume(str(shared_data(*CT)))
    image = torch.from_numpy(np.clip((volume.array + 57.0) / 221.0, 0, 1).astype(np.float32))[None]
    net = random_unet(out_channels=2, channels=(4, 8, 16, 32), res_units=2, seed=7)
    model = LoadedModel(net, ModelInfo("mem", "checkpoint", "UNet", 1, 2, "softmax", "test", network_args={"seed": 7}))
    window = Window([64, 64, 16], 0.25, 1, "gaussian")
    want, _ = run_sliding_window(net, image, window.roi_size)
    for backend in ("openvino", "onednn"):
        forward, choice, _warnings = backends.prepare(model, image, window, backend, "cpu", 8, print, print)
        assert choice.backend == backend and forward is not None
        got, _ = run_sliding_window(net, image, window.roi_size, forward=forward)
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= min(1e-4 * max(1.0, scale), 1 / 255)
        assert float((activate(got[0], "softmax") - activate(want[0], "softmax")).abs().max()) <= 1 / 255


# ---------------------------------------------------------------- the export cache


def _fresh(path):
    """A newly loaded model (nothing warm in memory), as a new worker would have it."""
    return load_model(path)


def test_export_once_then_disk_cache_then_warm(exports, tmp_path, monkeypatch):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    path = save_layout(random_unet(channels=(4, 8, 16), seed=8), tmp_path / "m.pt", "plain")
    opts = dict(roi_size=[48, 48, 16])
    before = len(exports)
    first = run(_fresh(path), CT, "openvino", **opts)
    assert first.backend.source == "exported" and len(exports) == before + 1
    assert first.timings["backend_s"] > 0
    model = _fresh(path)
    second = run(model, CT, "openvino", **opts)
    assert second.backend.source == "disk cache" and len(exports) == before + 1  # no re-export
    third = run(model, CT, "openvino", **opts)
    assert third.backend.source == "warm" and third.timings["backend_s"] < 0.05
    assert_same(second, first)
    other_window = run(model, CT, "openvino", roi_size=[32, 32, 16])
    assert other_window.backend.source == "exported" and len(exports) == before + 2  # one per window shape
    folder = tmp_path / "cache" / "backends"
    for item in (tmp_path / "cache", folder):
        assert stat.S_IMODE(os.stat(item).st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert len([f for f in files if f.endswith(".onnx")]) == 2 and len([f for f in files if f.endswith(".json")]) == 2
    assert all(stat.S_IMODE(os.stat(folder / f).st_mode) == 0o600 for f in files)


@pytest.mark.parametrize("damage", ["truncated", "altered", "manifest garbage", "missing"])
def test_damaged_cache_entry_is_exported_again(exports, damage, tmp_path, monkeypatch):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    path = save_layout(random_unet(channels=(4, 8, 16), seed=9), tmp_path / "m.pt", "plain")
    want = run(_fresh(path), CT, "openvino", roi_size=[48, 48, 16])
    folder = tmp_path / "cache" / "backends"
    onnx = next(folder.glob("*.onnx"))
    data = onnx.read_bytes()
    if damage == "truncated":  # a crash mid-write of an older version, or a full disk
        onnx.write_bytes(data[: len(data) // 2])
    elif damage == "altered":  # same size, one weight changed: only the hash can tell
        index = len(data) - 100
        onnx.write_bytes(data[:index] + bytes([data[index] ^ 0x55]) + data[index + 1 :])
    elif damage == "manifest garbage":
        next(folder.glob("*.json")).write_text("{not json")
    else:
        onnx.unlink()
    before = len(exports)
    lines = []
    got = run(_fresh(path), CT, "openvino", log=lines.append, roi_size=[48, 48, 16])
    assert got.backend.backend == "openvino" and got.backend.source == "exported"
    assert len(exports) == before + 1
    if damage != "manifest garbage":  # an unreadable manifest is simply a miss
        assert any("unusable" in line and "exporting again" in line for line in lines), lines
    assert (
        onnx.read_bytes() != b"" and backend_cache.digest(onnx.read_bytes()) in next(folder.glob("*.json")).read_text()
    )
    assert_same(got, want)


def test_same_path_and_time_with_other_weights_is_not_a_cache_hit(exports, tmp_path, monkeypatch):
    """``cp -p`` of another model over the file keeps its path and modification time: the weights' hash tells."""
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    path = save_layout(random_unet(channels=(4, 8, 16), seed=10), tmp_path / "m.pt", "plain")
    first = run(_fresh(path), CT, "openvino", roi_size=[48, 48, 16])
    times = os.stat(path)
    save_layout(random_unet(channels=(4, 8, 16), seed=11), path, "plain")
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    model = _fresh(path)
    before = len(exports)
    got = run(model, CT, "openvino", roi_size=[48, 48, 16])
    assert got.backend.source == "exported" and len(exports) == before + 1
    assert_same(got, run(model, CT, "torch", roi_size=[48, 48, 16]))
    assert (got.probabilities.quantized != first.probabilities.quantized).any()


def test_cache_folder_not_private_is_not_used(tmp_path, monkeypatch):
    """A cache folder that is a link (or another user's) is never read or written: the run exports in memory and
    says so; a folder of ours with loose permissions is made private."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "link"))
    path = save_layout(random_unet(channels=(4, 8, 16), seed=12), tmp_path / "m.pt", "plain")
    got = run(_fresh(path), CT, "openvino", roi_size=[48, 48, 16])
    assert got.backend.backend == "openvino" and "not cached on disk" in got.backend.reason
    assert "not a plain folder" in got.backend.reason and not any(elsewhere.iterdir())
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(loose))
    cache, why = backend_cache.open_cache()
    assert cache is not None and not why and stat.S_IMODE(os.stat(loose).st_mode) == 0o700


def test_cache_keeps_the_most_recent_entries_and_sweeps_leftovers(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    cache, _why = backend_cache.open_cache()
    leftover = tmp_path / "cache" / "backends" / ".tmp-killed.onnx"  # a process killed mid-write
    leftover.write_bytes(b"partial")
    os.utime(leftover, (0, 0))
    keys = [backend_cache.digest(str(i).encode()) for i in range(backend_cache.MAX_ENTRIES + 2)]
    for i, key in enumerate(keys):
        assert cache.store(key, {"key": {"i": i}}, data=b"onnx %d" % i) is None
        os.utime(cache.folder + f"/{key}.json", (1000 + i, 1000 + i))
    cache.store(keys[-1], {"key": {"i": len(keys) - 1}})  # the newest once more: evicts beyond the limit
    assert [cache.manifest(k, {"i": i}) is not None for i, k in enumerate(keys)] == [False, False] + [
        True
    ] * backend_cache.MAX_ENTRIES
    data, why = cache.exported(keys[5], cache.manifest(keys[5], {"i": 5}))
    assert data == b"onnx 5" and not why and not leftover.exists()
    assert not (tmp_path / "cache" / "backends" / f"{keys[0]}.onnx").exists()


# ---------------------------------------------------------------- fallbacks, each with its line


class BakesItsInput(torch.nn.Module):
    """Scales its output by a Python number read from its input: a tracer bakes the trace input's value in."""

    def __init__(self):
        super().__init__()
        self.unet = random_unet(channels=(4, 8, 16), seed=13)

    def forward(self, x):
        return self.unet(x) * float(x.std() + 1.0)


class NotExportable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unet = random_unet(channels=(4, 8, 16), seed=14)

    def forward(self, x):
        return self.unet(x) - torch.kthvalue(x.flatten(), 3).values  # no ONNX symbolic for kthvalue


def _code_model(net):
    return LoadedModel(net.eval(), ModelInfo("mem", "checkpoint", "custom", 1, 1, "sigmoid", "test", size_divisor=4))


@pytest.mark.parametrize(
    "net, why",
    [
        (BakesItsInput, "validation against PyTorch failed: max logit difference"),
        (NotExportable, "ONNX export failed: UnsupportedOperatorError"),
    ],
)
def test_export_or_validation_failure_falls_back_with_one_line(net, why, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    model = _code_model(net())
    lines = []
    got = run(model, CT, "openvino", log=lines.append, roi_size=[48, 48, 16])
    assert got.backend.backend == "torch" and why in got.backend.reason
    assert [w for w in got.warnings if w.startswith("backend openvino not used") and why in w]
    said = [line for line in lines if line.startswith("backend: ")]
    assert len(said) == 1 and why in said[0] and "Traceback" not in said[0], lines
    out, err = capfd.readouterr()
    assert "graph" not in out and "graph" not in err  # the exporter's C++ dump of the graph is kept quiet
    assert_same(got, run(model, CT, "torch", roi_size=[48, 48, 16]))
    again = run(_code_model(net()), CT, "openvino", roi_size=[48, 48, 16])  # remembered: no second export
    assert again.backend.backend == "torch" and "remembered" in again.backend.reason


@pytest.mark.parametrize("blocked", ["openvino", "onnx"])
def test_runtime_not_installed_falls_back_cleanly(exports, blocked, tmp_path, monkeypatch):
    """Without the runtime (its import blocked) everything still works on PyTorch, with one clean line."""
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)  # import → ImportError
    path = save_layout(random_unet(channels=(4, 8, 16), seed=15), tmp_path / "m.pt", "plain")
    lines = []
    before = len(exports)
    got = run(_fresh(path), MR, "openvino", log=lines.append, roi_size=[48, 48, 16])
    said = [line for line in lines if line.startswith("backend: ")]
    assert said == [
        f"backend: torch (openvino not used: not installed: {blocked} (import of {blocked} halted; "
        f"None in sys.modules); pip install openvino onnx)"
    ], lines
    assert got.backend.backend == "torch" and len(exports) == before
    monkeypatch.setenv("UNETSEG_AUTO_MIN_SECONDS", "0")  # auto measures what it has: oneDNN and PyTorch
    auto = run(_fresh(path), MR, "auto", roi_size=[48, 48, 16])
    assert auto.backend.backend in ("onednn", "torch") and "openvino not used: not installed" in auto.backend.reason
    assert "fastest on a probe window" in auto.backend.reason and not auto.warnings
    assert_same(auto, got)
