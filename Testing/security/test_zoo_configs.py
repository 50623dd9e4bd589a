"""Real model-zoo configs load untrusted (the code elsewhere in them is never run) and give the same result as
MONAI's own ConfigParser (``--trust-bundle``) on the same image."""

import json
import shutil

import numpy as np
import pytest
import torch
from hostile import HERE, guard  # noqa: F401

from conftest import blob_volume
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.contract.volume import Volume
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment


def _zoo_bundle(tmp_path, name):
    """The zoo config with random weights for its network (built here, by trusted test code)."""
    from monai.networks import nets

    root = tmp_path / name
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    shutil.copy(HERE / "zoo" / f"{name}.inference.json", root / "configs" / "inference.json")
    (root / "configs" / "metadata.json").write_text("{}")
    definition = json.loads((root / "configs" / "inference.json").read_text())["network_def"]
    args = {k: v for k, v in definition.items() if k != "_target_"}
    torch.manual_seed(0)
    torch.save(getattr(nets, definition["_target_"])(**args).state_dict(), root / "models" / "model.pt")
    return str(root)


@pytest.mark.parametrize(
    "name,architecture,channels,steps,activation",
    [
        (
            "spleen_ct_segmentation",
            "UNet",
            (1, 2),
            ["Orientationd", "Spacingd", "ScaleIntensityRanged", "EnsureTyped"],
            "softmax",
        ),
        ("brats_mri_segmentation", "SegResNet", (4, 3), ["NormalizeIntensityd"], "sigmoid"),
    ],
)
def test_zoo_config_loads_untrusted(name, architecture, channels, steps, activation, tmp_path, guard):  # noqa: F811
    info = load_model(_zoo_bundle(tmp_path, name)).info
    assert (info.architecture, (info.in_channels, info.out_channels)) == (architecture, channels)
    assert info.preprocessing == {"bundle": steps} and info.activation == activation and info.notes == []


def test_untrusted_reader_matches_monai_config_parser(tmp_path, guard):  # noqa: F811
    root = _zoo_bundle(tmp_path, "spleen_ct_segmentation")
    affine = np.diag([0.9, 0.9, 2.5, 1.0])
    volume = Volume((blob_volume((40, 36, 16)) * 300 - 100)[None], affine)
    options = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
    ours = segment(volume, load_model(root), options)
    monai = segment(volume, load_model(root, trust_bundle=True), options)
    np.testing.assert_array_equal(ours.probabilities.quantized, monai.probabilities.quantized)
    np.testing.assert_array_equal(ours.masks, monai.masks)


def test_2d_bundle_with_slice_inferer_matches_monai_config_parser(tmp_path, guard):  # noqa: F811
    """A 2-D UNet run slice by slice (``SliceInferer``) is on the allow-list and gives MONAI's own result."""
    from hostile import make_bundle
    from monai.networks.nets import UNet

    torch.manual_seed(1)
    net = UNet(2, 1, 2, (4, 8, 16), (2, 2), num_res_units=1)
    definition = {
        "_target_": "UNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
    }
    inferer = {"_target_": "SliceInferer", "spatial_dim": 2, "roi_size": [32, 32], "sw_batch_size": 2}
    root = make_bundle(tmp_path / "bundle2d", network_def=definition, weights=net, inferer=inferer)
    ours, monai = load_model(root), load_model(root, trust_bundle=True)
    assert (ours.info.spatial_dims, ours.info.slice_axis) == (2, 2) == (monai.info.spatial_dims, monai.info.slice_axis)
    volume = Volume(blob_volume((40, 36, 6))[None], np.diag([0.8, 0.8, 3.0, 1.0]))
    a = segment(volume, ours, SegmentOptions(device="cpu"))
    b = segment(volume, monai, SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(a.probabilities.quantized, b.probabilities.quantized)
