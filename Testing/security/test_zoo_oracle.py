"""Model Zoo bundles run untrusted give what ``monai.bundle run`` gives (MONAI's own runner, executing the very
config, trusted here by the test) on real data of the bundle's modality: per-label Dice ≥ 0.999 and the same
geometry. Random weights are saved where each config loads them; a smaller network stands in where the zoo's one
would take minutes on a CPU (the same config with fewer filters)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from hostile import zoo_bundle

from conftest import REPO, shared_data

CT = shared_data("totalsegmentator", "example_ct_sm.nii.gz")
T1 = shared_data("itk-t1", "KmeansTest_T1UCharRaw.nii.gz")
MR = shared_data("totalsegmentator", "example_mr_sm.nii.gz")


def _monai_bundle_run(out, config, root, source, as_dicts=False):
    """``monai.bundle run`` of ``config`` on ``source``: its one output image. ``as_dicts``: the config's dataset
    takes a decathlon datalist (``[{"image": path}]``) rather than paths."""
    runner = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root", str(root)]
    text = config.read_text()
    if '"evaluating"' in text:  # an older bundle's entry point, as its README runs it
        runner += ["--run_id", "evaluating"]
    if "num_workers" in text:  # one image: no loader processes (they change nothing but the time)
        runner += ["--dataloader#num_workers", "0"]
    runner += [
        "--dataset_dir",
        str(source.parent),
        "--output_dir",
        str(out),
        "--datalist",
        repr([{"image": str(source)} if as_dicts else str(source)]),
    ]
    done = subprocess.run(runner, cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [expected_file] = [p for p in out.rglob("*") if p.is_file()]
    return sitk.ReadImage(str(expected_file))


def _cli_segment(ours, root, source, *more):
    """``unetsigmoidseg segment`` of ``source`` with the bundle, untrusted (``more``: other flags): its output image."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "UNetSigmoidSeg"), os.environ.get("PYTHONPATH", "")]))
    cli = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "segment", str(source), "--model", str(root), "-o", str(ours)]
    done = subprocess.run(cli + ["-q", *more], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return sitk.ReadImage(str(ours))


def _assert_same_labels(got, want):
    """Per label of MONAI's output (at least two), Dice ≥ 0.999 against ours; each printed (pytest -s)."""
    a, b = sitk.GetArrayFromImage(got), np.squeeze(sitk.GetArrayFromImage(want))
    labels = sorted(set(np.unique(b).tolist()) - {0})
    assert len(labels) >= 2, "the reference must not be trivial"
    for k in labels:
        dice = 2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
        print(f"oracle: label {k}: Dice {dice:.6f}, {np.sum((a == k) != (b == k))} voxels differ")
        assert dice >= 0.999, f"label {k}: Dice {dice:.5f} against monai.bundle run"


def _t1_divisible_by_8(folder):
    """The T1 cropped to 128×128×56: SimpleInferer runs the network on the whole image, which a UNet with three
    strides of 2 takes only in multiples of 8 (MONAI's own run fails otherwise)."""
    path = folder / "t1.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(T1))[:, :, 3:59], str(path))
    return path


@pytest.mark.parametrize(
    "name, image, overrides, config_edit, trusted",
    [
        ("segmentation_template", "t1", {}, None, True),  # SimpleInferer, YAML, `$@transforms`, CommonKeys
        ("wholeBody_ct_segmentation", "ct", {"init_filters": 8}, ('"init_filters": 32', '"init_filters": 8'), False),
        ("ventricular_short_axis_3label", "mr", {}, None, True),  # 2-D UNet, SliceInferer 256×256, `$torch.device`
    ],
)
def test_untrusted_and_trusted_runs_equal_monai_bundle_run(tmp_path, name, image, overrides, config_edit, trusted):
    root = zoo_bundle(tmp_path, name, **overrides)
    config = next((root / "configs").glob("inference.*"))
    if config_edit:
        config.write_text(config.read_text().replace(*config_edit))
    data = tmp_path / "data"
    data.mkdir()
    source = _t1_divisible_by_8(data) if image == "t1" else {"ct": CT, "mr": MR}[image]
    want = _monai_bundle_run(tmp_path / "monai", config, root, source)
    got = _cli_segment(tmp_path / "ours.nii.gz", root, source)
    assert got.GetSize() == want.GetSize()[:3]
    np.testing.assert_allclose(got.GetSpacing(), want.GetSpacing()[:3], atol=1e-5)
    np.testing.assert_allclose(got.GetOrigin(), want.GetOrigin()[:3], atol=1e-4)
    np.testing.assert_allclose(got.GetDirection(), np.asarray(want.GetDirection()).reshape(-1)[:9], atol=1e-6)
    _assert_same_labels(got, want)
    if trusted:  # --trust-bundle: MONAI's ConfigParser builds the bundle's objects (its code runs), same result
        again = _cli_segment(tmp_path / "trusted.nii.gz", root, source, "--trust-bundle")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(got))


def test_prostate_keep_largest_component_equals_monai_bundle_run(tmp_path):
    """prostate_mri_anatomy: argmax, then ``KeepLargestConnectedComponentd(applied_labels=[1, 2])``, then Invertd.
    The real MR with its spacing given as the bundle's 0.5 mm (so its Spacingd keeps the grid and only the clean-up
    is compared); a smaller UNet of the same shape stands in. The step must change the masks (checked against the
    bundle run without it) and the product must give MONAI's result."""
    import json

    small = {"channels": [4, 8, 16, 32, 64, 128], "num_res_units": 1}
    root = zoo_bundle(tmp_path, "prostate_mri_anatomy", **small)
    config = root / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data["network_def"].update(small)
    config.write_text(json.dumps(data))
    data["postprocessing"]["transforms"] = [
        t for t in data["postprocessing"]["transforms"] if "KeepLargest" not in t["_target_"]
    ]
    plain = tmp_path / "without_step.json"
    plain.write_text(json.dumps(data))
    image = sitk.ReadImage(str(MR))
    image.SetSpacing((0.5, 0.5, 0.5))
    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "mr.nii.gz"
    sitk.WriteImage(image, str(source))
    want = _monai_bundle_run(tmp_path / "monai", config, root, source)
    without = _monai_bundle_run(tmp_path / "monai_plain", plain, root, source)
    got = _cli_segment(tmp_path / "ours.nii.gz", root, source)
    assert got.GetSize() == want.GetSize()[:3]
    a, b = sitk.GetArrayFromImage(got), np.squeeze(sitk.GetArrayFromImage(want)).round().astype(int)
    c = np.squeeze(sitk.GetArrayFromImage(without)).round().astype(int)
    assert set(np.unique(b).tolist()) == {0, 1, 2}
    assert np.sum(b != c) > 100, "the bundle's KeepLargestConnectedComponentd must change its masks here"
    for k in (1, 2):
        dice = 2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
        print(f"oracle: label {k}: Dice {dice:.6f}, {np.sum((a == k) != (b == k))} voxels differ")  # -s shows it
        assert dice >= 0.999, f"label {k}: Dice {dice:.5f} against monai.bundle run"


def test_pediatric_dynunet_equals_monai_bundle_run(tmp_path):
    """pediatric_abdominal_ct_segmentation: DynUNet whose weights its CheckpointLoader names (models/dynunet_FT.pt),
    ``$len(@spatial_size)``, Orientationd, Spacingd 1.5×1.5×3, ScaleIntensityRanged, CropForegroundd; softmax,
    Invertd, then argmax. On the real CT, with fewer filters and overlap 0.25 (the zoo's 0.75 takes minutes on a
    CPU) on both sides, and MONAI's default image reader for the oracle (its ITKReader needs ``itk``, not installed;
    the product never uses the bundle's reader)."""
    import yaml

    filters = [4, 8, 16, 32, 64, 64]
    root = zoo_bundle(tmp_path, "pediatric_abdominal_ct_segmentation", weights="models/dynunet_FT.pt", filters=filters)
    config = root / "configs" / "inference.yaml"
    data = yaml.safe_load(config.read_text())
    data["network_def"]["filters"] = filters
    data["inferer"]["overlap"] = 0.25
    data["preprocessing"]["transforms"][0].pop("reader")
    config.write_text(yaml.safe_dump(data))
    want = _monai_bundle_run(tmp_path / "monai", config, root, CT, as_dicts=True)
    got = _cli_segment(tmp_path / "ours.nii.gz", root, CT)
    assert got.GetSize() == want.GetSize()[:3]
    np.testing.assert_allclose(got.GetSpacing(), want.GetSpacing()[:3], atol=1e-5)
    np.testing.assert_allclose(got.GetOrigin(), want.GetOrigin()[:3], atol=1e-4)
    _assert_same_labels(got, want)


def test_endoscopic_flexible_unet_on_a_png_equals_monai_bundle_run(tmp_path):
    """endoscopic_tool_segmentation: a 2-D FlexibleUNet (efficientnet-b2, no download) on an RGB PNG frame made from
    the real CT, ``Resized`` to 736×480 by its 2-D preprocessing, ``SimpleInferer``, Invertd, argmax. A random
    FlexibleUNet answers almost the same everywhere: its head is centred and scaled so that the frame splits into
    two classes (a head scaled further would turn float rounding into visible differences). Pixels whose probability is
    within 1e-3 of 0.5 (rounding may decide them) are left out; they must be under half of the frame."""
    import torch

    root = zoo_bundle(tmp_path, "endoscopic_tool_segmentation")
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(CT)))
    plane = np.clip((ct[ct.shape[0] // 2] + 200) / 600 * 255, 0, 255).astype(np.uint8)
    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "frame.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([plane, plane[::-1], np.roll(plane, 7, 1)], -1), True), str(source))
    probabilities = tmp_path / "p.nrrd"
    _cli_segment(tmp_path / "first.nii.gz", root, source, "--probabilities", str(probabilities))
    median = float(np.median(sitk.GetArrayFromImage(sitk.ReadImage(str(probabilities)))[..., 1]))
    weights = torch.load(root / "models" / "model.pt")
    weights["segmentation_head.0.bias"][1] -= float(np.log(median / (1 - median)))
    for key in ("segmentation_head.0.weight", "segmentation_head.0.bias"):
        weights[key] = weights[key] * 1e3
    torch.save(weights, root / "models" / "model.pt")
    want = sitk.GetArrayFromImage(
        _monai_bundle_run(tmp_path / "monai", root / "configs" / "inference.json", root, source)
    )
    probabilities.unlink()
    got = sitk.GetArrayFromImage(
        _cli_segment(tmp_path / "ours.nii.gz", root, source, "--probabilities", str(probabilities))
    )
    tools = sitk.GetArrayFromImage(sitk.ReadImage(str(probabilities)))[..., 1].reshape(want.shape)
    want, got = want > 0, got.reshape(want.shape) > 0
    assert 0.2 < want.mean() < 0.8, "the frame must split into both classes"
    decided = np.abs(tools - 0.5) > 1e-3
    assert decided.mean() > 0.5
    print(f"oracle: {decided.mean():.3f} of the frame decided, {np.sum(got != want)} pixels differ in all")  # -s
    np.testing.assert_array_equal(got[decided], want[decided])


def test_swin_unetr_equals_monai_bundle_run(tmp_path):
    """swin_unetr_btcv_segmentation: SwinUNETR (windowed attention), 14 labels, Orientationd, Spacingd 1.5×1.5×2,
    ScaleIntensityRanged; softmax, Invertd, argmax. Its config passes ``img_size``, which MONAI 1.5 removed from
    SwinUNETR: MONAI's own run fails on it, untrusted it is checked and ignored (it only checked the input size). The
    oracle runs the config without it; feature_size 12 instead of 48, one block per stage instead of two, overlap
    0.25 instead of 0.5 and a quarter of the CT (minutes on a CPU otherwise), on both sides."""
    import json

    small = {"feature_size": 12, "depths": [1, 1, 1, 1]}
    root = zoo_bundle(tmp_path, "swin_unetr_btcv_segmentation", img_size=None, **small)
    config = root / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data["network_def"].update(small)
    data["inferer"]["overlap"] = 0.25  # fewer windows: seconds instead of minutes
    config.write_text(json.dumps(data))
    source = tmp_path / "data" / "ct.nii.gz"  # a quarter of the CT (both halves of its axial plane): 4 windows
    source.parent.mkdir()
    image = sitk.ReadImage(str(CT))
    sitk.WriteImage(image[: image.GetWidth() // 2, image.GetHeight() // 2 :, :], str(source))
    got = _cli_segment(tmp_path / "ours.nii.gz", root, source)  # with the config's img_size
    del data["network_def"]["img_size"]
    data["preprocessing"]["transforms"][0].pop("reader")  # ITKReader needs itk (not installed); ours never reads
    config.write_text(json.dumps(data))
    want = _monai_bundle_run(tmp_path / "monai", config, root, source)
    assert got.GetSize() == want.GetSize()[:3]
    np.testing.assert_allclose(got.GetOrigin(), want.GetOrigin()[:3], atol=1e-4)
    _assert_same_labels(got, want)
