"""A fast CPU backend's result is PyTorch's, on every window of the run, or PyTorch runs and says why (issue #23).

The matrix: real CT (the JPEG2000 DICOM series, air-heavy, and the small CT), MR and the T1 head; MONAI UNets with
batch, instance and group normalisation and none, 0–2 residual units, 3-D and 2-D, windows smaller and larger than
the image. Each backend (asked for explicitly) either ran and its masks equal PyTorch's (Dice ≥ 0.999 per segment,
uint8 probabilities within one step of 1/255 on ≥ 99.99 % of voxels), or the run says that PyTorch ran and why.
Then the guard itself: constant windows never reach a backend, a backend that is wrong only on some of the run's
windows (not on the probe) is caught and the run redone on PyTorch, decisions are kept per preprocessing.
"""

import json

import numpy as np
import pytest
import torch
from fidelity_helpers import CT, MR, T1, dice

from conftest import shared_data
from UNetSigmoidSegLib.contract.model import ModelInfo
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.contract.result import BackendChoice, Window
from UNetSigmoidSegLib.engine.backends import cache as backend_cache
from UNetSigmoidSegLib.engine.backends import check as backend_check
from UNetSigmoidSegLib.engine.backends import runtimes
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.model import LoadedModel
from UNetSigmoidSegLib.engine.running.pipeline import segment

DICOM = ("totalsegmentator", "example_ct_dicom")  # 512×512×20, JPEG2000: air all around the body
PREPROCESS = {
    DICOM: dict(normalization="ct", ct_window=[-160, 240]),
    CT: dict(normalization="ct", ct_window=[-160, 240]),
    MR: dict(normalization="zscore"),
    T1: dict(normalization="zscore"),
}
_VOLUMES = {}


def volume(data):
    if data not in _VOLUMES:
        _VOLUMES[data] = read_volume(str(shared_data(*data)))
    return _VOLUMES[data]


def unet(spatial_dims=3, norm="instance", res_units=0, out_channels=1, channels=(4, 8, 16), seed=0):
    """A real MONAI UNet with random weights, held in memory as the engine holds a loaded one."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(spatial_dims, 1, out_channels, channels, [2] * (len(channels) - 1), num_res_units=res_units, norm=norm)
    for module in net.modules():  # batch norm: statistics as training leaves them, not the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    net.eval()
    activation = "sigmoid" if out_channels == 1 else "softmax"
    divisor = 2 ** (len(channels) - 1)
    info = ModelInfo(
        "mem", "checkpoint", "UNet", 1, out_channels, activation, "test", size_divisor=divisor,
        spatial_dims=spatial_dims, network_args={"norm": str(norm), "res": res_units, "seed": seed},
    )  # fmt: skip
    return LoadedModel(net, info)


GROUP = ("group", {"num_groups": 1})
MATRIX = {
    # name: (data, network, options)
    "DICOM CT, instance norm, no residual units, roi 128×128×16 (the reported case)": (
        DICOM, dict(norm="instance", res_units=0), dict(roi_size=[128, 128, 16])),
    "DICOM CT, group norm, 1 residual unit, 3 sigmoid outputs, batches of 2": (
        DICOM, dict(norm=GROUP, res_units=1, out_channels=3, seed=1), dict(roi_size=[128, 128, 16], sw_batch_size=2)),
    "small CT, batch norm, 2 residual units, softmax, window larger than the image": (
        CT, dict(norm="batch", res_units=2, out_channels=2, seed=2), dict(roi_size=[128, 128, 32])),
    "small CT, no norm, 1 residual unit": (CT, dict(norm=None, res_units=1, seed=3), dict(roi_size=[64, 64, 16])),
    "MR, instance norm, 2 residual units, window larger than the image": (
        MR, dict(norm="instance", res_units=2, seed=4), dict(roi_size=[128, 96, 32])),
    "MR, group norm, no residual units, softmax": (
        MR, dict(norm=GROUP, res_units=0, out_channels=2, seed=5), dict(roi_size=[48, 48, 16])),
    "T1, instance norm, 1 residual unit": (T1, dict(norm="instance", res_units=1, seed=6), dict(roi_size=[64, 64, 32])),
    "T1, batch norm, no residual units, 3 outputs": (
        T1, dict(norm="batch", res_units=0, out_channels=3, seed=7), dict(roi_size=[64, 64, 64], activation="sigmoid",
                                                                        multi_label=True)),
    "2-D: small CT axial slices, instance norm, 1 residual unit, in-plane window larger than the image": (
        CT, dict(spatial_dims=2, norm="instance", res_units=1, seed=8), dict(roi_size=[128, 128], sw_batch_size=4)),
    "2-D: T1 along axis 1, group norm, 2 residual units": (
        T1, dict(spatial_dims=2, norm=GROUP, res_units=2, seed=9), dict(roi_size=[64, 64], slice_axis=1)),
    "2-D: MR, no norm, no residual units, softmax": (
        MR, dict(spatial_dims=2, norm=None, res_units=0, out_channels=2, seed=10), dict(roi_size=[64, 64])),
}  # fmt: skip


def run(model, data, backend, log=None, **options):
    opts = SegmentOptions(device="cpu", backend=backend, **dict(PREPROCESS[data], **options))
    return segment(volume(data), model, opts, log=log)


def assert_pytorchs_answer(got, want):
    """Masks: Dice ≥ 0.999 per segment; uint8 probabilities within one step on ≥ 99.99 % of voxels (and never more
    than two steps apart)."""
    assert got.masks.shape == want.masks.shape
    for a, b in zip(got.masks, want.masks):
        assert dice(a, b) >= 0.999, f"Dice {dice(a, b):.5f} against PyTorch"
    steps = np.abs(got.probabilities.quantized.astype(int) - want.probabilities.quantized.astype(int))
    assert (steps <= 1).mean() >= 0.9999, f"{(steps > 1).mean():.5%} of voxels differ by more than 1/255"
    assert steps.max() <= 2


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("backend", ["openvino", "onednn"])
@pytest.mark.parametrize("name", list(MATRIX))
def test_every_backend_gives_pytorchs_answer_or_says_why(name, backend, cache):
    data, net, opts = MATRIX[name]
    model = unet(**net)
    want = run(model, data, "torch", **opts)
    lines = []
    got = run(model, data, backend, log=lines.append, **opts)
    assert_pytorchs_answer(got, want)
    assert sum(line.startswith("backend: ") for line in lines) >= 1
    choice = got.backend
    if choice.backend == backend:
        assert choice.windows >= 1 and choice.checked >= 1, choice  # every run is checked on its own windows
        assert choice.max_abs_diff <= choice.tolerance
        assert "checked against PyTorch" in choice.describe()
        assert got.warnings == want.warnings  # no warning of its own (a random net's implausible mask: both say so)
    else:  # PyTorch ran: the run says why, as a warning (the backend was asked for)
        assert choice.backend == "torch" and (choice.redone or "not used" in choice.reason), choice
        assert any(backend in w and "PyTorch" in w for w in got.warnings), got.warnings


def test_the_reported_case_runs_its_air_windows_on_pytorch(cache):
    """The issue's case: OpenVINO on an instance-norm UNet gave logits 2.5 away on all-air windows (Dice 0.875). Those
    windows are constant: PyTorch runs them (once per distinct batch), the backend the rest, and the whole run
    equals PyTorch's."""
    model = unet(norm="instance", res_units=0)
    want = run(model, DICOM, "torch", roi_size=[128, 128, 16])
    got = run(model, DICOM, "openvino", roi_size=[128, 128, 16])
    assert got.backend.backend == "openvino", got.backend
    assert got.backend.windows == 50 and got.backend.pytorch_windows == 10, got.backend
    assert_pytorchs_answer(got, want)
    for a, b in zip(got.masks, want.masks):
        assert dice(a, b) >= 0.9999
    as_json = json.loads(json.dumps(got.backend.to_dict()))  # what --json and the wire carry
    assert as_json["pytorch_windows"] == 10 and as_json["checked"] >= 2 and as_json["redone"] == ""
    back = BackendChoice.from_dict(as_json)
    assert (back.windows, back.pytorch_windows, back.checked) == (50, 10, got.backend.checked)


def test_a_constant_window_is_never_given_to_the_backend():
    """Batches holding a constant window run on PyTorch, as the PyTorch path runs them; one PyTorch call per distinct
    constant batch (its answer does not change)."""
    net = unet(norm="instance").network
    seen = []

    def backend(x):
        seen.append(x.clone())
        return net(x)

    calls = []
    reference = torch.nn.Module()
    reference.forward = lambda x: calls.append(1) or net(x)
    guarded = backend_check.GuardedForward("test", backend, reference, total=6)
    roi = (1, 1, 32, 32, 16)
    air, water, body = torch.zeros(roi), torch.full(roi, 0.25), torch.rand(roi)
    with torch.inference_mode():
        for x in (air, air, water, air, torch.cat([air, body]), body):
            y = guarded(x)
            assert torch.equal(y, net(x)), "a constant window's answer must be PyTorch's"
    assert all(not bool(backend_check.constant_windows(x).any()) for x in seen) and len(seen) == 1
    assert guarded.pytorch_calls == 5 and len(calls) == 3 + 1  # air, water, the mixed batch; body checked once


def _wrong_where_dark(net, low=0.02):
    """A backend right on bright windows and wrong (logits + 0.5) on dark, non-constant ones: the central probe
    passes, some of the run's windows do not."""

    def forward(x):
        y = net(x)
        dark = (x.reshape(x.shape[0], -1).mean(1) < low).reshape(-1, *([1] * (y.ndim - 1)))
        return y + 0.5 * dark

    return forward


def test_a_backend_wrong_on_some_run_windows_is_caught_and_the_run_redone(cache, monkeypatch):
    model = unet(norm="batch", res_units=1, seed=11)
    monkeypatch.setattr(runtimes, "onednn_forward", _wrong_where_dark)
    want = run(model, DICOM, "torch", roi_size=[128, 128, 16])
    lines = []
    got = run(model, DICOM, "onednn", log=lines.append, roi_size=[128, 128, 16])
    assert got.backend.backend == "torch" and "disagreed with PyTorch on window batch" in got.backend.redone
    assert any("redoing the run on PyTorch" in line for line in lines)
    assert any("backend onednn" in w and "redone on PyTorch" in w for w in got.warnings)
    assert np.array_equal(got.masks, want.masks)
    assert np.array_equal(got.probabilities.quantized, want.probabilities.quantized)
    # remembered for this model, window and preprocessing: the next run goes straight to PyTorch and says why
    again = run(model, DICOM, "onednn", roi_size=[128, 128, 16])
    assert again.backend.backend == "torch" and "disagreed" in again.backend.reason
    assert any("onednn" in w for w in again.warnings)
    # ... in a new process too (the cache), and auto does not pick it
    fresh = unet(norm="batch", res_units=1, seed=11)
    monkeypatch.setenv("UNETSEG_AUTO_MIN_SECONDS", "0")
    auto = run(fresh, DICOM, "auto", roi_size=[128, 128, 16])
    assert auto.backend.backend != "onednn" and "onednn not used" in auto.backend.reason, auto.backend
    assert "disagreed" in auto.backend.reason


def test_decisions_are_kept_per_preprocessing(cache, monkeypatch):
    """A backend refused under one preprocessing (a run window disagreed) is still tried for a run whose input is
    normalised otherwise; under the first, it stays refused."""
    model = unet(norm="batch", res_units=1, seed=12)
    real = runtimes.onednn_forward
    monkeypatch.setattr(runtimes, "onednn_forward", _wrong_where_dark)
    bad = run(model, DICOM, "onednn", roi_size=[128, 128, 16])
    assert bad.backend.backend == "torch" and bad.backend.redone
    monkeypatch.setattr(runtimes, "onednn_forward", real)
    good = run(model, DICOM, "onednn", roi_size=[128, 128, 16], ct_window=[-1000, 1000])
    assert good.backend.backend == "onednn", good.backend
    still = run(model, DICOM, "onednn", roi_size=[128, 128, 16])
    assert still.backend.backend == "torch" and "disagreed" in still.backend.reason


def test_checks_include_the_least_and_most_varied_windows():
    """Within the budget, the first batch, every new extreme of input variance and a regular sample are checked."""
    net = unet(norm="instance").network
    guarded = backend_check.GuardedForward("test", net, net, total=32)
    assert guarded.max_checks == 2
    torch.manual_seed(0)
    spreads = [1.0] * 10 + [0.01] + [1.0] * 10 + [50.0] + [1.0] * 10
    checked = []
    with torch.inference_mode():
        for i, s in enumerate(spreads):
            before = guarded.checked
            guarded(torch.randn(1, 1, 16, 16, 16) * s)
            if guarded.checked > before:
                checked.append(i)
    assert checked[0] == 0 and 10 in checked, checked  # first and least varied (budget 2)
    wide = backend_check.GuardedForward("test", net, net, total=320)  # budget 20: the most varied one too
    with torch.inference_mode():
        seen = []
        for i, s in enumerate(spreads):
            before = wide.checked
            wide(torch.randn(1, 1, 16, 16, 16) * s)
            if wide.checked > before:
                seen.append(i)
    assert {0, 10, 21} <= set(seen), seen


def test_probe_is_not_a_constant_window():
    """An image whose centre is air: the probe the backend is first validated on is the most varied window."""
    image = torch.zeros(1, 1, 96, 96, 32)
    image[0, 0, :20, :20, :] = torch.rand(20, 20, 32)
    probe = backend_check.probe_batch(image, Window([32, 32, 16], 0.25, 2, "gaussian"))
    assert probe.shape == (2, 1, 32, 32, 16)
    assert not bool(backend_check.constant_windows(probe).any())


def test_backend_choice_says_what_was_checked():
    choice = BackendChoice("auto", "openvino", "auto: fastest", "openvino 2026", windows=32, pytorch_windows=4,
                           checked=3, max_abs_diff=2.1e-5, tolerance=1 / 255, check_s=0.4)  # fmt: skip
    text = choice.describe()
    assert "checked against PyTorch on 3 of 32 window batches" in text and "4 constant window batches" in text
    redone = BackendChoice("openvino", "torch", "openvino: …", redone="openvino disagreed with PyTorch on window 7")
    assert "redone on PyTorch: openvino disagreed" in redone.describe()
    assert BackendChoice.from_dict(json.loads(json.dumps(choice.to_dict()))).checked == 3
    assert backend_cache.KEY_FORMAT == 3


def test_export_cache_is_keyed_by_what_the_network_computes_not_where_its_file_lies(tmp_path):
    """A copy or a moved checkpoint reuses the export (same key); other weights, another window or a TorchScript
    network with the same weights but other code do not."""
    import shutil
    from types import SimpleNamespace

    from conftest import tiny_unet
    from UNetSigmoidSegLib.contract.model import ModelSpec
    from UNetSigmoidSegLib.engine.loading.model import load_model
    from UNetSigmoidSegLib.runners.host import ModelCache

    torch.save(tiny_unet(out_channels=2, seed=1).state_dict(), tmp_path / "a.pt")
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "a.pt", tmp_path / "copy" / "renamed.pt")
    torch.save(tiny_unet(out_channels=2, seed=2).state_dict(), tmp_path / "other.pt")
    cache = ModelCache()
    key = {name: backend_cache.backend_key(cache.get(ModelSpec(str(tmp_path / name)))[0], [32, 32, 16])[0]
           for name in ("a.pt", "copy/renamed.pt", "other.pt")}  # fmt: skip
    assert key["a.pt"] == key["copy/renamed.pt"] != key["other.pt"]
    assert backend_cache.backend_key(load_model(str(tmp_path / "a.pt")), [16, 16, 16])[0] != key["a.pt"]

    class Doubled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x) * 2

    net = tiny_unet(out_channels=2, seed=1)
    plain, doubled = torch.jit.script(net), torch.jit.script(Doubled(net))
    info = SimpleNamespace(network_args={})
    keys = [backend_cache.backend_key(LoadedModel(m, info), [32, 32, 16])[0] for m in (plain, doubled)]
    assert keys[0] != keys[1]
