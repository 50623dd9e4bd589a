"""Oracles: the engine against MONAI's own code paths, on oblique, anisotropic volumes."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY_UNET_DEF, blob_volume, oblique_direction, tiny_unet, write_json, write_volume
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.engine.files.outputs import write_segmentation
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.model import LoadedModel, load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment


def _monai_load(path):
    from monai.transforms import EnsureChannelFirst, LoadImage

    img = LoadImage(image_only=True)(str(path))
    return EnsureChannelFirst()(img)


@pytest.mark.parametrize("threshold,flip", [(0.5, False), (0.47, True)])
def test_oracle1_plain_checkpoint_equals_monai_path(tmp_path, threshold, flip):
    """LoadImage → EnsureChannelFirst → model → Activations(sigmoid) → AsDiscrete(threshold) == engine."""
    from monai.transforms import Activations, AsDiscrete

    shape = (32, 24, 16)  # divisible by 2^depth: the whole volume is one window
    path = write_volume(
        tmp_path / "img.nii.gz", blob_volume(shape) * 10, spacing=(0.7, 1.3, 3.0), direction=oblique_direction(25, flip)
    )
    net = tiny_unet(channels=(4, 8, 16), res_units=1)
    torch.save(net.state_dict(), tmp_path / "m.pt")

    img = _monai_load(path)
    with torch.no_grad():
        logits = net(img.as_tensor()[None])[0]
    expected = AsDiscrete(threshold=threshold)(Activations(sigmoid=True)(logits)).numpy()[0].astype(np.uint8)

    opts = SegmentOptions(threshold=threshold, roi_size=list(shape), blend_mode="constant", device="cpu")
    result = segment(read_volume(path), load_model(str(tmp_path / "m.pt")), opts)
    out = tmp_path / "seg.nii.gz"
    write_segmentation(result, str(out))
    got = _monai_load(out)
    assert 0 < expected.sum() < expected.size, "oracle output must not be trivial"
    np.testing.assert_array_equal(got.numpy()[0].astype(np.uint8), expected)
    np.testing.assert_allclose(got.affine.numpy(), img.affine.numpy(), atol=1e-4)
    assert got.shape[1:] == img.shape[1:]


def _bundle(root, net, spacing=(2.0, 2.0, 2.0)):
    net_def = dict(TINY_UNET_DEF)
    pre = {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": list(spacing), "mode": "bilinear"},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -20,
                "a_max": 120,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    }
    post = {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "resample": False,
                "separate_folder": False,
                "output_dtype": "uint8",
            },
        ],
    }
    inference = {
        "imports": ["$import glob"],
        "bundle_root": str(root),
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": pre,
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [16, 16, 16],
            "sw_batch_size": 2,
            "overlap": 0.25,
            "mode": "gaussian",
        },
        "postprocessing": post,
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "run": ["$@evaluator.run()"],
    }
    write_json(root / "configs" / "inference.json", inference)
    write_json(
        root / "configs" / "metadata.json",
        {
            "version": "0.1.0",
            "network_data_format": {
                "inputs": {"image": {"num_channels": 1}},
                "outputs": {"pred": {"num_channels": 1, "channel_def": {"0": "blob"}}},
            },
        },
    )
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return inference


@pytest.mark.slow
def test_oracle2_bundle_matches_monai_bundle_run(tmp_path):
    """Engine on a bundle with orientation/spacing/intensity preprocessing == ``python -m monai.bundle run``."""
    root = tmp_path / "bundle"
    net = tiny_unet(channels=(4, 8, 16), res_units=1, seed=3)
    _bundle(root, net)
    (root / "data").mkdir()
    image = write_volume(
        root / "data" / "case.nii.gz",
        blob_volume((45, 38, 20), seed=2),
        spacing=(1.1, 0.9, 3.2),
        direction=oblique_direction(30),
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(root / "configs" / "inference.json"),
            "--meta_file",
            str(root / "configs" / "metadata.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    reference = sitk.ReadImage(str(root / "eval" / "case_seg.nii.gz"))

    model = load_model(str(root))
    assert model.info.format == "bundle" and model.info.labels == ["blob"] and model.info.roi_size == [16, 16, 16]
    assert model.info.activation == "sigmoid" and model.info.threshold == 0.5
    result = segment(read_volume(image), model, SegmentOptions(device="cpu"))
    out = tmp_path / "engine.nii.gz"
    write_segmentation(result, str(out))
    mine = sitk.ReadImage(str(out))
    a, b = sitk.GetArrayFromImage(mine) > 0, sitk.GetArrayFromImage(reference) > 0
    assert a.shape == b.shape
    assert 0 < b.sum() < b.size
    dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice >= 0.999, dice
    np.testing.assert_allclose(mine.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mine.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mine.GetDirection(), reference.GetDirection(), atol=1e-5)
    inp = sitk.ReadImage(image)
    np.testing.assert_allclose(mine.GetOrigin(), inp.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mine.GetDirection(), inp.GetDirection(), atol=1e-5)


def test_bundle_zip_equals_folder(tmp_path):
    import shutil

    root = tmp_path / "b"
    _bundle(root, tiny_unet(seed=4))
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", root_dir=tmp_path, base_dir="b")
    img = read_volume(write_volume(tmp_path / "x.nii.gz", blob_volume((30, 30, 20))))
    a = segment(img, load_model(str(root)), SegmentOptions(device="cpu"))
    b = segment(img, load_model(archive), SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(a.probabilities.quantized, b.probabilities.quantized)
    assert not any(
        p.name.startswith("unetseg-bundle-")
        for p in __import__("pathlib").Path(__import__("tempfile").gettempdir()).iterdir()
    )


def test_untrusted_bundle_with_code_in_needed_part_is_refused(tmp_path):
    from UNetSigmoidSegLib.errors import ModelError

    root = tmp_path / "b"
    inference = _bundle(root, tiny_unet())
    marker = tmp_path / "ran"
    inference["preprocessing"]["transforms"].append(
        {
            "_target_": "Lambdad",
            "keys": "image",
            "func": f"$lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x",
        }
    )
    write_json(root / "configs" / "inference.json", inference)
    with pytest.raises(ModelError, match="would run code") as err:
        load_model(str(root))
    assert "--trust-bundle" in err.value.hint
    assert not marker.exists()
    # with explicit trust MONAI's own parser runs it, as documented
    model = load_model(str(root), trust_bundle=True)
    segment(
        read_volume(write_volume(tmp_path / "x.nii.gz", blob_volume((20, 20, 20)))), model, SegmentOptions(device="cpu")
    )
    assert marker.exists()


def test_untrusted_bundle_ignores_code_in_unused_parts(tmp_path):
    root = tmp_path / "b"
    inference = _bundle(root, tiny_unet())
    marker = tmp_path / "ran"
    inference["device"] = f"$__import__('pathlib').Path({str(marker)!r}).touch()"
    write_json(root / "configs" / "inference.json", inference)
    load_model(str(root))
    assert not marker.exists()


def test_bundle_with_non_monai_target_refused(tmp_path):
    from UNetSigmoidSegLib.errors import ModelError

    root = tmp_path / "b"
    inference = _bundle(root, tiny_unet())
    inference["network_def"]["_target_"] = "subprocess.Popen"
    write_json(root / "configs" / "inference.json", inference)
    with pytest.raises(ModelError, match="not a MONAI class"):
        load_model(str(root))


def test_bundle_with_torchscript_weights_only(tmp_path):
    root = tmp_path / "b"
    net = tiny_unet(seed=8)
    _bundle(root, net)
    (root / "models" / "model.pt").unlink()
    torch.jit.save(torch.jit.script(net), str(root / "models" / "model.ts"))
    model = load_model(str(root))
    assert model.info.format == "bundle (TorchScript)" and model.info.labels == ["blob"]
    img = read_volume(write_volume(tmp_path / "x.nii.gz", blob_volume((24, 24, 16))))
    reference = segment(img, LoadedModel(net, model.info, model.bundle_preprocessing), SegmentOptions(device="cpu"))
    got = segment(img, model, SegmentOptions(device="cpu"))
    np.testing.assert_array_equal(got.probabilities.quantized, reference.probabilities.quantized)
