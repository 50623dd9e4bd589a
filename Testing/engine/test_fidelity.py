"""Fidelity to plain MONAI (issue #12): checkpoints built the way MONAI's tutorials, Lightning and Ignite users build
them, on real CT / MR; ``unetsigmoidseg segment`` against the script a researcher writes with MONAI, at the window
the product reports (which must be the window asked for, rounded up only to the network's divisor).

Train nothing: random weights with randomised batch-norm statistics give non-trivial outputs (asserted).
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from fidelity_helpers import (
    CT,
    MR,
    NORMALIZATION,
    T1,
    dice,
    monai_reference,
    random_unet,
    save_layout,
    save_torchscript,
)

from conftest import shared_data
from UNetSigmoidSegLib.cli import main


def run_cli(capsys, image, model, tmp_path, args, worker=False):
    """``unetsigmoidseg segment`` in this process (``worker``: through ``--worker``); returns the JSON case row."""
    out, prob = tmp_path / "out.seg.nrrd", tmp_path / "prob.nrrd"
    argv = ["segment", str(image), "--model", model, "-o", str(out), "--probabilities", str(prob)]
    argv += ["--device", "cpu", "--json", "--quiet"] + list(args) + (["--worker"] if worker else [])
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    case = json.loads(capsys.readouterr().out)["cases"][0]
    seg = slicerio.read_segmentation(str(out))
    masks = np.stack([slicerio.segment_mask(seg, s) > 0 for s in seg["segments"]])
    written = sitk.ReadImage(str(prob))
    return case, masks, seg, written


def assert_faithful(image, case, masks, seg, written, expected_probabilities, expected_masks, activation):
    source = sitk.ReadImage(str(image))
    # identical geometry: the segmentation and the probability map lie on the input grid
    lps = np.eye(4)
    lps[:3, :3] = np.array(source.GetDirection()).reshape(3, 3) * np.array(source.GetSpacing())
    lps[:3, 3] = source.GetOrigin()
    np.testing.assert_allclose(np.asarray(seg["ijkToLPS"], float), lps, atol=1e-5)
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    # the same voxels
    assert masks.shape == expected_masks.shape
    for got, want in zip(masks, expected_masks):
        assert 0 < want.sum() < want.size, "the reference output must not be trivial"
        assert dice(got, want) >= 0.999, f"Dice {dice(got, want):.5f} against plain MONAI"
    # probabilities within 1/255, one component per channel (softmax: every class, background first)
    arr = sitk.GetArrayFromImage(written)  # (K, J, I) or (K, J, I, C)
    got = arr.transpose(2, 1, 0)[None] if arr.ndim == 3 else arr.transpose(3, 2, 1, 0)
    assert got.shape == expected_probabilities.shape
    assert float(np.abs(got - expected_probabilities).max()) <= 1.0 / 255


# ---------------------------------------------------------------- the checkpoints of MONAI's tutorials

CASES = {
    # name: (data, network kwargs, layout or torchscript, CLI args, activation, expected window roi)
    "binary sigmoid (BCEWithLogits), roi 160³ on a 122×101×30 CT": (
        CT,
        dict(channels=(4, 8, 16, 32), res_units=2),
        "plain",
        ["--roi-size", "160", "160", "160"],
        "sigmoid",
        [160, 160, 160],
    ),
    "spleen tutorial softmax, Lightning self._model, default window": (
        CT,
        dict(out_channels=2, channels=(2, 4, 8, 16, 32), res_units=2),
        "lightning:_model",
        [],
        "softmax",
        [96, 96, 96],
    ),
    "multi-label sigmoid (3 outputs), DataParallel, roi 50×50×20 rounded to the divisor": (
        MR,
        dict(out_channels=3, channels=(4, 8, 16, 32), res_units=1),
        "dataparallel",
        ["--roi-size", "50", "50", "20", "--activation", "sigmoid", "--multi-label", "--overlap", "0.5"],
        "sigmoid",
        [56, 56, 24],
    ),
    "custom strides (2, 1, 2) and kernels 5 / 3, read from the residual units, Ignite": (
        T1,
        dict(channels=(2, 4, 8, 16), strides=(2, 1, 2), res_units=2, kernel_size=5, up_kernel_size=3, seed=3),
        "ignite",
        ["--roi-size", "64", "64", "30", "--blend-mode", "constant", "--sw-batch-size", "3"],
        "sigmoid",
        [64, 64, 32],
    ),
    "no residual units, strides (2, 1) given, Lightning self.net, instance norm": (
        MR,
        dict(out_channels=2, channels=(4, 8, 16), strides=(2, 1), res_units=0, norm="instance", seed=5),
        "lightning:net",
        ["--strides", "2", "1", "--roi-size", "48"],
        "softmax",
        [48, 48, 48],
    ),
    "Lightning self.unet with an EMA average beside it (ignored)": (
        CT,
        dict(channels=(4, 8, 16), res_units=1, seed=9),
        "lightning-ema:unet",
        ["--roi-size", "64", "64", "16", "--threshold", "0.4"],
        "sigmoid",
        [64, 64, 16],
    ),
    "TorchScript script, 2 outputs, roi 64×64×16": (
        CT,
        dict(out_channels=2, channels=(4, 8, 16, 32), res_units=2, seed=1),
        "script",
        ["--roi-size", "64", "64", "16"],
        "softmax",
        [64, 64, 16],
    ),
    "TorchScript trace, strides (2, 1, 2) read from the archive, roi 62×62×14 rounded up to 64×64×16": (
        MR,
        dict(channels=(4, 8, 16, 32), strides=(2, 1, 2), res_units=0, seed=2),
        "trace",
        ["--roi-size", "62", "62", "14"],
        "sigmoid",
        [64, 64, 16],
    ),
    "2-D UNet, axial slices of the CT (default axis), roi 128² larger than the slices, softmax": (
        CT,
        dict(spatial_dims=2, out_channels=3, channels=(4, 8, 16, 32), res_units=1, seed=4),
        "plain",
        ["--roi-size", "128", "128"],
        "softmax",
        [128, 128],
    ),
    "2-D UNet, slice axis 1 of the T1, batches of 4 slices, Lightning self.model": (
        T1,
        dict(spatial_dims=2, channels=(4, 8, 16), res_units=2, seed=6),
        "lightning:model",
        ["--slice-axis", "1", "--roi-size", "80", "--sw-batch-size", "4"],
        "sigmoid",
        [80, 80],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_segment_equals_plain_monai(name, tmp_path, capsys):
    data, kwargs, layout, args, activation, roi = CASES[name]
    image = shared_data(*data)
    net = random_unet(**kwargs)
    if layout in ("script", "trace"):
        model = save_torchscript(net, tmp_path / "model.ts", layout, kwargs.get("spatial_dims", 3))
    else:
        model = save_layout(net, tmp_path / "model.pt", layout)
    case, masks, seg, written = run_cli(capsys, image, model, tmp_path, NORMALIZATION[data] + args)
    window = case["window"]
    assert window["roi_size"] == roi and case["activation"] == activation
    if kwargs.get("spatial_dims") == 2:
        assert window["slice_axis"] == (1 if "--slice-axis" in args else 2)  # the CT: isotropic → k (axial)
    threshold = float(args[args.index("--threshold") + 1]) if "--threshold" in args else 0.5
    probabilities, expected = monai_reference(image, net, data, window, activation, threshold)
    assert_faithful(image, case, masks, seg, written, probabilities, expected, activation)


def test_through_the_worker_equals_plain_monai(tmp_path, capsys):
    """The same fidelity when the network runs in the background worker (the wire carries the window)."""
    import sys

    image = shared_data(*CT)
    net = random_unet(out_channels=2, channels=(4, 8, 16, 32), res_units=2, seed=11)
    model = save_layout(net, tmp_path / "model.pt", "lightning:_model")
    args = NORMALIZATION[CT] + ["--roi-size", "160", "--worker-python", sys.executable]
    case, masks, seg, written = run_cli(capsys, image, model, tmp_path, args, worker=True)
    assert case["window"] == {
        "roi_size": [160, 160, 160],
        "overlap": 0.25,
        "sw_batch_size": 1,
        "blend_mode": "gaussian",
        "slice_axis": None,
        "requested_roi": None,
    }
    assert case["worker"]["pid"]
    probabilities, expected = monai_reference(image, net, CT, case["window"], "softmax")
    assert_faithful(image, case, masks, seg, written, probabilities, expected, "softmax")
