"""The segmentation run: activations, thresholds, cache, clean-up, device, fallback, cancel, bad volumes."""

import numpy as np
import pytest
import torch

from conftest import blob_volume, injected_out_of_memory, oblique_direction, tiny_unet, write_volume
from UNetSigmoidSegLib.contract import options as O
from UNetSigmoidSegLib.contract import result as R
from UNetSigmoidSegLib.contract.options import Cleanup, SegmentOptions
from UNetSigmoidSegLib.engine.files.volume import Volume, read_volume
from UNetSigmoidSegLib.engine.loading.model import LoadedModel, ModelInfo
from UNetSigmoidSegLib.engine.running.inference import select_device, window_roi
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.engine.running.postprocess import clean_mask
from UNetSigmoidSegLib.errors import CancelledError, InputError, OptionError


def _volume(shape=(30, 26, 18), channels=1):
    arr = np.stack([blob_volume(shape, seed=c) for c in range(channels)])
    affine = np.eye(4)
    affine[:3, :3] = oblique_direction(15) * np.array([1.2, 0.9, 2.5])
    affine[:3, 3] = [5, -7, 11]
    return Volume(arr, affine)


def _model(net, **info):
    defaults = dict(
        path="mem",
        format="checkpoint",
        architecture="UNet",
        in_channels=1,
        out_channels=None,
        activation="sigmoid",
        activation_source="test",
        size_divisor=4,
    )
    defaults.update(info)
    return LoadedModel(net, ModelInfo(**defaults))


class EndsInSigmoid(torch.nn.Module):
    """A UNet subclass-like network that already ends in a sigmoid."""

    def __init__(self, out_channels=1):
        super().__init__()
        self.unet = tiny_unet(out_channels=out_channels)

    def forward(self, x):
        return torch.sigmoid(self.unet(x))


def test_quantisation_and_threshold_semantics():
    p = np.linspace(0, 1, 100001, dtype=np.float32)[None]
    pm = R.make_probabilities(p, "sigmoid")
    assert pm.quantized.dtype == np.uint8 and pm.nbytes == p.size
    for t in (0.0, 0.1, 0.3, 0.5, 0.77, 1.0):
        cached = R.threshold_map(pm, [t])[0]
        exact = p[0] >= t
        disagree = cached != exact
        assert np.all(np.abs(p[0][disagree] - t) <= 1 / 510 + 1e-7), t
    np.testing.assert_array_equal(R.threshold_map(pm, [0.5])[0], p[0] >= 0.5)  # exact at 0.5


def test_thresholds_validated():
    with pytest.raises(OptionError, match="outside"):
        O.check_thresholds(1.5, 1)
    with pytest.raises(OptionError, match="outside"):
        O.check_thresholds(-0.1, 1)
    with pytest.raises(OptionError, match="2 values"):
        O.check_thresholds([0.1, 0.2, 0.3], 2)
    with pytest.raises(OptionError, match="Unknown activation"):
        O.check_activation("relu")


def test_multilabel_sigmoid_per_segment_thresholds_and_rethreshold():
    net = tiny_unet(out_channels=3, seed=5)
    result = segment(_volume(), _model(net, out_channels=3), SegmentOptions(threshold=[0.3, 0.5, 0.7], device="cpu"))
    assert result.masks.shape == (3, 30, 26, 18) and result.labels == ["Segment_1", "Segment_2", "Segment_3"]
    before = result.masks.sum(axis=(1, 2, 3))
    result.rethreshold([0.0, 1.0, 0.5])
    after = result.masks.sum(axis=(1, 2, 3))
    assert after[0] == result.masks[0].size and after[1] <= before[1] and after[2] >= before[2]
    stats = result.statistics()
    assert stats[0]["volume_ml"] == pytest.approx(after[0] * result.voxel_volume_ml, rel=1e-4)


def test_softmax_argmax_and_minimum_confidence():
    net = tiny_unet(out_channels=3, seed=6)
    result = segment(_volume(), _model(net, out_channels=3, activation="softmax"), SegmentOptions(device="cpu"))
    assert result.activation == "softmax" and result.masks.shape[0] == 2
    assert not (result.masks.sum(axis=0) > 1).any(), "softmax segments never overlap"
    n0 = result.masks.sum()
    result.rethreshold(0.6)
    assert result.masks.sum() < n0
    assert result.probabilities.nbytes == 2 * result.masks[0].size  # label + confidence: 2 bytes/voxel


def test_softmax_on_one_channel_is_an_error():
    with pytest.raises(OptionError, match="at least 2"):
        segment(_volume(), _model(tiny_unet()), SegmentOptions(activation="softmax", device="cpu"))


def test_doubled_sigmoid_detected():
    result = segment(_volume(), _model(EndsInSigmoid()), SegmentOptions(activation="sigmoid", device="cpu"))
    assert any("second one" in w and "'none'" in w for w in result.warnings)
    clean = segment(_volume(), _model(EndsInSigmoid()), SegmentOptions(activation="none", device="cpu"))
    assert not [w for w in clean.warnings if "sigmoid" in w]  # (this random net's mask is the whole volume: said)


def test_none_on_logits_warns():
    result = segment(_volume(), _model(tiny_unet(seed=2)), SegmentOptions(activation="none", device="cpu"))
    assert any("look like logits" in w for w in result.warnings)


def test_cleanup_uses_spacing_for_islands():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:10, 2:10, 2:10] = True  # 512 voxels
    mask[15:17, 15:17, 15:17] = True  # 8 voxels = 64 mm3 at 2 mm
    mask[5, 5, 5] = False  # a hole
    spacing = (2.0, 2.0, 2.0)
    assert clean_mask(mask, spacing, Cleanup(min_island_mm3=100)).sum() == 511
    assert clean_mask(mask, spacing, Cleanup(min_island_mm3=50)).sum() == 519
    assert clean_mask(mask, spacing, Cleanup(largest_component=True, fill_holes=True)).sum() == 512


def test_image_smaller_than_roi_and_odd_sizes():
    vol = _volume(shape=(13, 7, 9))
    result = segment(vol, _model(tiny_unet()), SegmentOptions(roi_size=[96, 96, 96], device="cpu"))
    assert result.masks.shape[1:] == (13, 7, 9)
    # MONAI's semantics: the window is never shrunk to the image (MONAI pads it); only rounded up to the divisor
    assert result.window.roi_size == [96, 96, 96] and result.window.requested_roi is None
    assert window_roi([96], 3, [4, 4, 4]) == ([96, 96, 96], None, [])
    roi, asked, notes = window_roi([95, 96, 97], 3, [8, 8, 8])
    assert roi == [96, 96, 104] and asked == [95, 96, 97] and len(notes) == 1 and "rounded up" in notes[0]


def test_orientation_and_spacing_are_inverted_onto_the_input_grid(tmp_path):
    path = write_volume(
        tmp_path / "v.nrrd",
        blob_volume((33, 27, 15)),
        spacing=(0.9, 1.4, 3.1),
        direction=oblique_direction(35, flip=True),
    )
    vol = read_volume(path)
    opts = SegmentOptions(orientation="RAS", spacing=[2.0, 2.0, 2.0], normalization="zscore", device="cpu")
    result = segment(vol, _model(tiny_unet()), opts)
    assert result.masks.shape[1:] == vol.spatial_shape
    np.testing.assert_allclose(result.affine, vol.affine)


def test_input_volume_not_modified():
    vol = _volume()
    before = vol.array.copy(), vol.affine.copy()
    segment(
        vol,
        _model(tiny_unet()),
        SegmentOptions(orientation="RAS", spacing=[2, 2, 2], normalization="zscore", device="cpu"),
    )
    np.testing.assert_array_equal(vol.array, before[0])
    np.testing.assert_array_equal(vol.affine, before[1])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda v: Volume(v.array[:, :, :, :1], v.affine), "single slice"),
        (lambda v: Volume(np.zeros((1, 0, 4, 4), np.float32), v.affine), "empty"),
        (lambda v: Volume(np.full_like(v.array, 7.0), v.affine), "constant"),
        (lambda v: Volume(np.where(v.array > 0.5, np.nan, v.array), v.affine), "NaN/Inf"),
        (lambda v: Volume(np.where(v.array > 0.5, np.inf, v.array), v.affine), "NaN/Inf"),
        (lambda v: Volume(np.concatenate([v.array, v.array]), v.affine), "expects 1 input channel"),
    ],
)
def test_bad_volumes(make, match):
    with pytest.raises(InputError, match=match):
        segment(make(_volume()), _model(tiny_unet()), SegmentOptions(device="cpu"))


def test_two_channel_model_on_one_channel_volume():
    with pytest.raises(InputError) as err:
        segment(_volume(), _model(tiny_unet(in_channels=2), in_channels=2), SegmentOptions(device="cpu"))
    assert "expects 2 input channel" in err.value.message and "1-channel model" in err.value.hint


def test_multicomponent_volume_with_matching_model(tmp_path):
    arr = np.stack([blob_volume((20, 20, 12), seed=s) for s in (0, 1)], axis=-1)
    vol = read_volume(write_volume(tmp_path / "mc.nrrd", arr, components=True))
    assert vol.array.shape == (2, 20, 20, 12)
    result = segment(vol, _model(tiny_unet(in_channels=2), in_channels=2), SegmentOptions(device="cpu"))
    assert result.masks.shape[1:] == (20, 20, 12)


def test_memory_guard(monkeypatch):
    import UNetSigmoidSegLib.engine.running.pipeline as pipeline

    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: 2**18)
    with pytest.raises(InputError, match=r"needs about \d+\.\d MiB of memory to segment; 0.2 MiB is free") as err:
        segment(_volume(), _model(tiny_unet()), SegmentOptions(device="cpu"))
    assert "Crop" in err.value.hint


def test_device_selection_is_explicit():
    assert select_device("cpu").device == "cpu"
    auto = select_device("auto")
    if not torch.cuda.is_available():
        assert auto.device in ("cpu", "mps") and "CUDA not available" in auto.reason
        with pytest.raises(OptionError, match="CUDA not available"):
            select_device("cuda")
    with pytest.raises(OptionError, match="Unknown device"):
        select_device("tpu")


def test_out_of_memory_fallback_is_announced():
    logs = []
    model = _model(tiny_unet())
    with injected_out_of_memory(model):
        result = segment(_volume(), model, SegmentOptions(device="cpu"), log=logs.append)
    assert any("Out of memory" in m and "retrying" in m for m in logs)
    reference = segment(_volume(), _model(tiny_unet()), SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(result.probabilities.quantized, reference.probabilities.quantized)


def test_cancel_between_windows_returns_nothing():
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(CancelledError):
        segment(
            _volume((64, 64, 32)),
            _model(tiny_unet()),
            SegmentOptions(roi_size=[16, 16, 16], device="cpu"),
            should_cancel=should_cancel,
        )


def test_progress_reports_stages_and_windows():
    seen = []
    segment(
        _volume((48, 40, 20)),
        _model(tiny_unet()),
        SegmentOptions(roi_size=[16, 16, 16], device="cpu"),
        progress=lambda s, f, m: seen.append((s, f, m)),
    )
    stages = [s for s, _, _ in seen]
    assert stages[0] == "preprocess" and "inference" in stages and stages[-1] == "postprocess"
    inf = [(f, m) for s, f, m in seen if s == "inference" and m.startswith("window")]
    assert len(inf) >= 8 and inf[-1][0] == 1.0 and "ETA" in inf[-1][1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the device machine)")
def test_cuda_amp_matches_cpu_segmentation():
    vol = _volume((64, 64, 48))
    model = _model(tiny_unet())
    cpu = segment(vol, model, SegmentOptions(device="cpu"))
    gpu = segment(vol, _model(tiny_unet()), SegmentOptions(device="cuda", amp=True))
    assert gpu.device.device == "cuda"
    agree = (cpu.masks == gpu.masks).mean()
    assert agree > 0.999
