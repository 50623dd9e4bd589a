"""Messages that match what runs (issue #12): the activation in the model summary, no spurious MONAI inverse warning,
the strides diagnosis and note, the window in ``--json`` and the summary line, the time covering loading; checkpoint
layouts found by structure; 2-D networks never given a 3-D window."""

import json
import re
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from fidelity_helpers import CT, random_unet, save_torchscript

from conftest import blob_volume, shared_data, write_json, write_volume
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract.options import Cleanup, SegmentOptions
from UNetSigmoidSegLib.contract.result import DeviceChoice, SegmentResult, Window, make_probabilities
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.checkpoint import load_strict
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.engine.running.preprocess import INVERSE_WARNING
from UNetSigmoidSegLib.errors import CancelledError, ModelError, OptionError


def _same_network(loaded, net, spatial_dims=3):
    x = torch.randn((1, 1) + (16,) * spatial_dims)
    with torch.no_grad():
        return torch.allclose(loaded.network(x), net(x), atol=1e-5)


# ---------------------------------------------------------------- activation in the summary = activation that runs


class FixedSizeNet(torch.nn.Module):
    """Not a UNet, and refuses inputs smaller than 40 voxels (so a small probe cannot learn its outputs)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, out_channels, 3, padding=1)

    def forward(self, x):
        if x.shape[2] < 40:
            raise ValueError("input too small")
        return self.conv(x)


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("out_channels,activation", [(1, "sigmoid"), (2, "softmax")])
def test_torchscript_summary_states_the_activation_that_runs(tmp_path, how, out_channels, activation):
    net = random_unet(out_channels=out_channels, channels=(4, 8, 16, 32), res_units=2, seed=1)
    loaded = load_model(save_torchscript(net, tmp_path / "m.ts", how))
    assert f"activation {activation} ({out_channels} output channel(s))" in loaded.info.summary()
    assert loaded.info.out_channels == out_channels and loaded.info.size_divisor == [8, 8, 8]
    assert loaded.info.notes == []  # its strides are read from the archive: nothing to say
    volume = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((30, 26, 18))))
    assert segment(volume, loaded, SegmentOptions(device="cpu", roi_size=[32])).activation == activation


def test_torchscript_that_is_not_a_unet_is_probed_or_honestly_unknown(tmp_path):
    probed = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1))
    info = load_model(save_torchscript(probed, tmp_path / "p.ts", "script")).info
    assert info.out_channels == 3 and "activation softmax (3 output channel(s))" in info.summary()
    assert any("used exactly as given" in n for n in info.notes)  # no silent rounding to 32 any more
    path = str(tmp_path / "f.ts")
    torch.jit.save(torch.jit.script(FixedSizeNet(1)), path)
    loaded = load_model(path)
    assert loaded.info.out_channels is None and loaded.info.activation == "auto"
    assert "sigmoid for 1 output channel, softmax for more" in loaded.info.summary()
    volume = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((44, 44, 44))))
    logs = []
    result = segment(volume, loaded, SegmentOptions(device="cpu", roi_size=[44]), log=logs.append)
    assert result.activation == "sigmoid" and "activation: sigmoid (1 output channel(s))" in logs


# ---------------------------------------------------------------- MONAI's inverse warning


@pytest.mark.parametrize("extra", [["--normalization", "zscore"], ["--orientation", "RAS", "--normalization", "ct"]])
def test_no_spurious_inverse_warning(tmp_path, capsys, extra):
    from monai.transforms import Compose, Invertd, NormalizeIntensityd

    from UNetSigmoidSegLib.engine.running.preprocess import to_meta

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = Compose([NormalizeIntensityd(keys="image")])({"image": to_meta(np.ones((1, 4, 4, 4)), np.eye(4))})
        Invertd(keys="image", transform=Compose([NormalizeIntensityd(keys="image")]), orig_keys="image")(data)
    assert any(INVERSE_WARNING in str(w.message) for w in seen), "MONAI itself warns here (the test is sensitive)"
    model = tmp_path / "m.pt"
    torch.save(random_unet().state_dict(), model)
    image = write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        argv = ["segment", image, "--model", str(model), "-o", str(tmp_path / "s.nii.gz"), "--ct-window", "0", "9"]
        rc = main(argv + extra)
    assert rc == 0
    assert not [w for w in seen if INVERSE_WARNING in str(w.message)]
    assert "inverse has been called" not in capsys.readouterr().err


# ---------------------------------------------------------------- strides


def _said(err, word):
    """The note / warning lines of a run's stderr that mention ``word``."""
    return [line for line in err.splitlines() if line.startswith(("note:", "warning:")) and word in line]


def test_strides_read_from_the_residual_units(tmp_path, capsys):
    net = random_unet(channels=(4, 8, 16, 32), strides=(2, 1, 2), res_units=1, seed=2)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.info.network_args["strides"] == [2, 1, 2] and loaded.info.size_divisor == [4, 4, 4]
    assert not any("strides" in n for n in loaded.info.notes + loaded.info.warnings)
    assert _same_network(loaded, net)
    image = write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)))
    assert main(["segment", image, "--model", str(tmp_path / "m.pt"), "-o", str(tmp_path / "s.nii.gz")]) == 0
    assert not _said(capsys.readouterr().err, "strides")  # the note only when it matters


def test_wrong_strides_are_named_as_the_cause(tmp_path, capsys):
    net = random_unet(channels=(4, 8, 16), strides=(2, 1), res_units=1)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path / "m.pt"), strides=[2, 2])
    assert "strides" in err.value.message and "level(s) [2] do not downsample" in err.value.message
    assert "--strides 2 1" in err.value.hint
    write_json(tmp_path / "m.json", {"network": {"strides": [2, 1, 2]}})
    with pytest.raises(ModelError, match=r"3 strides given \('strides' in m.json\) for a UNet with 2 downsampling"):
        load_model(str(tmp_path / "m.pt"))
    image = write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)))
    assert main(["segment", image, "--model", str(tmp_path / "m.pt"), "--strides", "1", "1"]) == 2
    assert "strides" in capsys.readouterr().err
    # a strict load whose only differences are residual paths names strides, not channels / norm / act
    from monai.networks.nets import UNet

    with pytest.raises(ModelError) as err:
        load_strict(UNet(3, 1, 1, (4, 8, 16), (2, 2), num_res_units=1, norm="batch"), net.state_dict(), "UNet")
    assert err.value.hint.startswith("The strides differ from training")


def test_without_residual_units_the_assumed_strides_are_a_warning_with_every_run(tmp_path, capsys):
    net = random_unet(channels=(4, 8, 16), res_units=0)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    image = write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)))
    argv = ["segment", image, "--model", str(tmp_path / "m.pt"), "-o", str(tmp_path / "s.nii.gz"), "--json"]
    argv += ["--overwrite"]  # run twice into one file
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: strides are not stored" in captured.err
    assert any(w.startswith("strides are not stored") for w in json.loads(captured.out)["cases"][0]["warnings"])
    assert main(argv + ["--strides", "2", "2"]) == 0
    captured = capsys.readouterr()
    assert not _said(captured.err, "strides") and json.loads(captured.out)["cases"][0]["warnings"] == []


# ---------------------------------------------------------------- layouts found by structure


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"_orig_mod." + k: v for k, v in s.items()},  # torch.compile
        lambda s: {"network." + k: v for k, v in s.items()},
        lambda s: {"state_dict": {"model." + k: v for k, v in s.items()}},  # Lightning self.model = UNet(...)
        lambda s: {"run": {"best": {"weights": {"module._model." + k: v for k, v in s.items()}}}},  # nested
        lambda s: {"model": s, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}},
        lambda s: dict(s, **{"loss.pos_weight": torch.ones(1)}),  # other entries beside the UNet
    ],
)
def test_unet_found_by_key_structure(tmp_path, wrap):
    net = random_unet(channels=(4, 8, 16), res_units=2)
    torch.save(wrap(net.state_dict()), tmp_path / "m.pt")
    assert _same_network(load_model(str(tmp_path / "m.pt")), net)


# ---------------------------------------------------------------- the window, the summary line, the time


def test_json_and_summary_line_report_the_window_and_the_whole_time(tmp_path, capsys):
    model = tmp_path / "m.pt"
    torch.save(random_unet(channels=(4, 8, 16), res_units=1).state_dict(), model)
    image = str(shared_data(*CT))
    argv = ["segment", image, "--model", str(model), "-o", str(tmp_path / "s.nii.gz"), "--device", "cpu"]
    argv += ["--normalization", "ct", "--ct-window", "-57", "164", "--overwrite"]
    assert main(argv + ["--json", "--roi-size", "70", "--overlap", "0.5", "--sw-batch-size", "2"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    case = summary["cases"][0]
    assert case["window"] == {
        "roi_size": [72, 72, 72],
        "overlap": 0.5,
        "sw_batch_size": 2,
        "blend_mode": "gaussian",
        "slice_axis": None,
        "requested_roi": [70, 70, 70],
    }
    assert "note: window 70×70×70 rounded up to 72×72×72: the network needs sizes divisible by 4×4×4" in captured.err
    assert summary["total_s"] >= summary["load_s"] + case["timings_s"]["total_s"] - 0.01
    # through a worker, loading (starting the worker and loading the network) is most of the time: it is counted
    started = time.perf_counter()
    assert main(argv + ["--worker", "--worker-python", sys.executable]) == 0
    wall = time.perf_counter() - started
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "roi 96×96×96, overlap 0.25, batch 1, gaussian" in line
    match = re.search(
        r"; ([0-9.]+) s incl\. ([0-9.]+) s loading the model\) — Research use — not for clinical use\.$", line
    )
    assert match, line
    seconds, loading = float(match.group(1)), float(match.group(2))
    assert seconds >= loading > 0 and seconds >= 0.6 * wall, (line, wall)


def test_window_travels_on_the_wire():
    window = Window([64, 48], 0.5, 4, "constant", 1, [60, 48])
    assert window.describe() == "2-D slices along j, roi 64×48 (asked 60×48), overlap 0.5, batch 4, constant"
    probabilities = make_probabilities(np.random.default_rng(0).random((1, 4, 3, 2)).astype(np.float32), "sigmoid")
    result = SegmentResult(
        probabilities, probabilities.quantized > 127, ["a"], [(1, 0, 0)], [0.5], "sigmoid", np.eye(4), np.ones(3),
        DeviceChoice("cpu", "test"), "CPU", Cleanup(), {}, [], window,
    )  # fmt: skip
    fields, arrays = result.to_wire()
    assert SegmentResult.from_wire(json.loads(json.dumps(fields)), arrays).window == window


# ---------------------------------------------------------------- 2-D networks


def test_2d_network_inspect_window_and_cancel(tmp_path, capsys):
    net = random_unet(spatial_dims=2, out_channels=2, channels=(4, 8, 16), res_units=1)
    torch.save(net.state_dict(), tmp_path / "m2d.pt")
    assert main(["inspect", str(tmp_path / "m2d.pt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("checkpoint: 2-D UNet(") and "dimensions       2-D" in out
    image = write_volume(tmp_path / "v.nii.gz", blob_volume((40, 36, 12)), spacing=(0.8, 0.8, 3.0))
    argv = ["segment", image, "--model", str(tmp_path / "m2d.pt"), "-o", str(tmp_path / "s.nii.gz"), "--json"]
    assert main(argv + ["--roi-size", "96", "96", "96"]) == 0  # a 3-D window: its in-plane part, never a traceback
    captured = capsys.readouterr()
    window = json.loads(captured.out)["cases"][0]["window"]
    assert window["roi_size"] == [96, 96] and window["slice_axis"] == 2  # largest spacing: k
    assert "the network is 2-D: its window is the in-plane part of roi [96, 96, 96]" in captured.err
    assert main(argv + ["--slice-axis", "3"]) == 2
    assert "Slice axis 3 is outside [0, 2]" in capsys.readouterr().err
    with pytest.raises(OptionError):
        SegmentOptions(slice_axis=1.5)
    loaded = load_model(str(tmp_path / "m2d.pt"))
    calls = []

    def progress(stage, fraction, message):
        calls.append(message)

    with pytest.raises(CancelledError):
        segment(
            read_volume(image),
            loaded,
            SegmentOptions(device="cpu", slice_axis=0, roi_size=[48]),  # one window per slice
            progress=progress,
            should_cancel=lambda: len([m for m in calls if m.startswith("slice batch")]) >= 3,
        )
    assert "slice batch 3/40" in " ".join(calls)  # slices along i: 40 of them, one per batch


def test_slice_axis_on_a_3d_network_is_a_warning(tmp_path):
    torch.save(random_unet().state_dict(), tmp_path / "m.pt")
    volume = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16))))
    result = segment(volume, load_model(str(tmp_path / "m.pt")), SegmentOptions(device="cpu", slice_axis=1))
    assert any("slice axis applies to 2-D networks" in w for w in result.warnings) and result.window.slice_axis is None


def test_2d_bundle_brings_its_slice_inferer(tmp_path):
    """A bundle whose inferer is MONAI's SliceInferer: its roi and spatial_dim are the window the run uses."""
    net = random_unet(spatial_dims=2, channels=(4, 8, 16), res_units=1)
    root = tmp_path / "bundle2d"
    (root / "models").mkdir(parents=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    write_json(root / "configs" / "metadata.json", {"version": "0.1", "network_data_format": {}})
    network_def = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16]}
    network_def.update({"strides": [2, 2], "num_res_units": 1, "norm": "batch"})
    inferer = {"_target_": "SliceInferer", "roi_size": [24, 20], "sw_batch_size": 3, "spatial_dim": 1}
    pre = {"_target_": "Compose", "transforms": [{"_target_": "NormalizeIntensityd", "keys": "image"}]}
    write_json(
        root / "configs" / "inference.json", {"network_def": network_def, "preprocessing": pre, "inferer": inferer}
    )
    loaded = load_model(str(root))
    assert loaded.info.spatial_dims == 2 and loaded.info.slice_axis == 1 and "2-D" in loaded.info.summary()
    volume = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((30, 26, 14))))
    window = segment(volume, loaded, SegmentOptions(device="cpu")).window
    assert (window.roi_size, window.slice_axis, window.sw_batch_size) == ([24, 20], 1, 3)
