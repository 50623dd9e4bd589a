"""Real Model Zoo bundle configs (Testing/security/zoo/<bundle>/configs) load untrusted — their side-effect-free
``$`` expressions read by our own reader —, with their weights where their CheckpointLoader puts them, their inferer
honoured (SimpleInferer: the whole image; padding_mode), their KeepLargestConnectedComponent applied where the
product gives it exactly, the postprocessing the product does not apply named, and
the bundles whose own Python code must run refused naming it. Nothing in them runs (``guard``)."""

import importlib
import shutil
import sys

import numpy as np
import pytest
import torch
from hostile import HERE, guard, zoo_bundle  # noqa: F401

from conftest import blob_volume
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.contract.volume import Volume
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import ModelError

ZOO = HERE / "zoo"
# PyTorch creates its compiler's cache folder in the temp folder when torch._dynamo is first imported (building a
# DynUNet on the meta device does, through torch.nn.init): imported here, outside the guarded temp folder, so the
# guard sees what the product and the bundle leave, not PyTorch's import.
importlib.import_module("torch._dynamo")


@pytest.mark.parametrize(
    "name, weights, architecture, inferer, extra",
    [
        ("ventricular_short_axis_3label", "models/model.pt", "UNet", "SliceInferer", {}),
        ("segmentation_template", "models/model.pt", "UNet", "SimpleInferer", {}),
        (
            "wholeBody_ct_segmentation",
            "models/model.pt",
            "SegResNet",
            "SlidingWindowInferer",
            {"padding_mode": "replicate"},
        ),
        ("prostate_mri_anatomy", "models/model.pt", "UNet", "SlidingWindowInferer", {}),
        ("pediatric_abdominal_ct_segmentation", "models/dynunet_FT.pt", "DynUNet", "SlidingWindowInferer", {}),
    ],
)
def test_zoo_bundle_loads_untrusted(tmp_path, guard, name, weights, architecture, inferer, extra):  # noqa: F811
    loaded = load_model(str(zoo_bundle(tmp_path, name, weights)))
    info = loaded.info
    assert (info.architecture, info.inferer, info.inferer_args) == (architecture, inferer, extra)
    said = f"weights: {weights} (named by the CheckpointLoader of the config)"
    assert (said in info.notes) == (weights != "models/model.pt")  # said only where they are not the usual file
    assert not [w for w in info.warnings if "is not applied" in w]  # every step of these bundles is applied
    prostate = name == "prostate_mri_anatomy"
    # prostate_mri_anatomy ends in KeepLargestConnectedComponentd(applied_labels=[1, 2]) after its argmax: applied
    assert info.cleanup == ({"largest_component": True} if prostate else {})
    assert any("KeepLargestConnectedComponentd" in n and "is applied" in n for n in info.notes) == prostate
    if prostate:  # inspect lists each step; its masks are made before Invertd, on the grid of its Spacingd: said
        assert info.postprocessing[:4] == ["Compose", "AsDiscreted", "KeepLargestConnectedComponentd", "Invertd"]
        assert [w for w in info.warnings if "before Invertd" in w and "Spacingd" in w]


@pytest.mark.parametrize(
    "change",
    [
        {"independent": False},
        {"num_components": 2},
        {"connectivity": 1},
        {"applied_labels": [1]},
        {"is_onehot": True},
        {"applied_labels": "$[1, 2]"},
        {"keys": "pred", "_target_": "monai.transforms.KeepLargestConnectedComponentd", "extra": 1},
    ],
    ids=["dependent", "two-components", "face-connectivity", "one-label", "onehot", "expression", "unknown-key"],
)
def test_keep_largest_forms_not_given_exactly_are_named_not_applied(tmp_path, guard, change):  # noqa: F811
    import json

    root = zoo_bundle(tmp_path, "prostate_mri_anatomy")
    config = root / "configs" / "inference.json"
    data = json.loads(config.read_text())
    [node] = [t for t in data["postprocessing"]["transforms"] if "KeepLargest" in t["_target_"]]
    node.update(change)
    config.write_text(json.dumps(data))
    info = load_model(str(root)).info
    assert info.cleanup == {}
    [named] = [w for w in info.warnings if "is not applied" in w]
    assert "KeepLargestConnectedComponentd" in named and "--largest-component" in named
    assert "KeepLargestConnectedComponentd (not applied)" in info.postprocessing


@pytest.mark.parametrize(
    "name, construct",
    [
        ("spleen_deepedit_annotation", "scripts.transforms.OrientationGuidanceMultipleLabelDeepEditd"),
        ("renalStructures_CECT_segmentation", "scripts.my_transforms.ConcatImages"),
    ],
)
def test_bundles_whose_own_code_must_run_are_refused_naming_it(tmp_path, guard, name, construct):  # noqa: F811
    root = tmp_path / name
    shutil.copytree(ZOO / name, root)  # no weights: the config is checked first and refused on its own
    with pytest.raises(ModelError) as err:
        load_model(str(root))
    assert construct in str(err.value) and "configs/inference.json" in str(err.value)


def test_refusals_name_the_real_config_file_and_every_problem(tmp_path, guard):  # noqa: F811
    root = tmp_path / "b"
    shutil.copytree(ZOO / "segmentation_template", root)
    config = root / "configs" / "inference.yaml"
    text = config.read_text()
    text = text.replace("_target_: UNet", "_target_: scripts.net.MyUNet").replace(
        "_target_: SimpleInferer", "_target_: scripts.inferer.MyInferer"
    )
    config.write_text(text)
    with pytest.raises(ModelError) as err:
        load_model(str(root))
    message = str(err.value)
    assert "configs/inference.yaml" in message and "2 problems" in message
    assert "scripts.net.MyUNet" in message and "scripts.inferer.MyInferer" in message


def test_weights_path_may_not_leave_thezoo_bundle(tmp_path, guard):  # noqa: F811
    root = zoo_bundle(tmp_path, "prostate_mri_anatomy")
    config = root / "configs" / "inference.json"
    (tmp_path / "outside.pt").write_bytes((root / "models" / "model.pt").read_bytes())
    for path in ("$@bundle_root + '/../outside.pt'", str(tmp_path / "outside.pt"), "../outside.pt"):
        config.write_text(config.read_text().replace("$@bundle_root + '/models/model.pt'", path))
        with pytest.raises(ModelError, match="lies outside the bundle"):
            load_model(str(root))
        config.write_text(config.read_text().replace(path, "$@bundle_root + '/models/model.pt'"))


def test_simple_inferer_runs_the_whole_image_as_monai_does(tmp_path, guard):  # noqa: F811
    """segmentation_template declares SimpleInferer: the product gives exactly the network on the whole image."""
    from monai.inferers import SimpleInferer
    from monai.transforms import ScaleIntensity

    root = zoo_bundle(tmp_path, "segmentation_template")
    loaded = load_model(str(root))
    array = (blob_volume((64, 48, 32)) * 200.0)[None].astype(np.float32)
    result = segment(Volume(array, np.eye(4)), loaded, SegmentOptions(device="cpu"))
    assert result.window.roi_size == [64, 48, 32] and result.window.blend_mode == "constant"
    with torch.inference_mode():
        logits = SimpleInferer()(ScaleIntensity()(torch.from_numpy(array))[None], loaded.network)[0]
    expected = torch.softmax(logits, 0).argmax(0).numpy()
    for s in range(result.masks.shape[0]):
        np.testing.assert_array_equal(result.masks[s], expected == s + 1)


def test_bundle_padding_mode_reaches_monai(tmp_path, guard, monkeypatch):  # noqa: F811
    """wholeBody_ct_segmentation pads with ``replicate``: MONAI's sliding window gets it (a small network stands in
    for the 105-label SegResNet: the same config with fewer filters), and on a volume smaller than the window the
    padding changes the answer — so dropping it would be a silent difference."""
    import monai.inferers
    from monai.inferers import sliding_window_inference

    root = zoo_bundle(tmp_path, "wholeBody_ct_segmentation", init_filters=8)
    config = root / "configs" / "inference.json"
    config.write_text(config.read_text().replace('"init_filters": 32', '"init_filters": 8'))
    loaded = load_model(str(root))
    assert loaded.info.inferer_args == {"padding_mode": "replicate"}
    calls = []

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return sliding_window_inference(*args, **kwargs)

    monkeypatch.setattr(monai.inferers, "sliding_window_inference", recorded)
    volume = Volume(blob_volume((40, 36, 20))[None].astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0]))
    result = segment(volume, loaded, SegmentOptions(device="cpu"))
    assert "padding_mode replicate" in result.window.describe()
    assert calls and all(c.get("padding_mode") == "replicate" for c in calls)
    image = torch.from_numpy(volume.array)[None]
    with torch.inference_mode():
        replicate = sliding_window_inference(image, [96, 96, 96], 1, loaded.network, 0.25, padding_mode="replicate")
        constant = sliding_window_inference(image, [96, 96, 96], 1, loaded.network, 0.25)
    assert not torch.equal(replicate, constant)


def test_trusted_bundle_imports_its_own_scripts_and_builds_no_loader(tmp_path):
    """Under --trust-bundle the bundle folder is importable while its config is parsed (as MONAI's runner makes it),
    and its image loader (here one needing ITK, which is not installed) is not built: the image is given."""
    import json

    root = tmp_path / "scripted"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "scripts").mkdir()
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / "my_transforms.py").write_text(
        "from monai.transforms import ScaleIntensityd\n\nclass MyScaled(ScaleIntensityd):\n    pass\n"
    )
    network = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
               "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}  # fmt: skip
    config = {
        "network_def": network,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "ITKReader"},
                {"_target_": "scripts.my_transforms.MyScaled", "keys": "image"},
            ],
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text("{}")
    from monai.networks.nets import UNet

    torch.save(UNet(3, 1, 1, (4, 8, 16), (2, 2), num_res_units=1).state_dict(), root / "models" / "model.pt")
    with pytest.raises(ModelError, match="scripts.my_transforms.MyScaled"):
        load_model(str(root))  # untrusted: the bundle's own code is refused by name
    loaded = load_model(str(root), trust_bundle=True)
    assert loaded.info.preprocessing == {"bundle": ["MyScaled"]}
    assert str(root) not in sys.path and "scripts.my_transforms" not in sys.modules


def test_flexible_unet_bundle_runs_untrusted_on_a_png_as_trusted(tmp_path, guard):  # noqa: F811
    """endoscopic_tool_segmentation: a 2-D FlexibleUNet (efficientnet-b2, no pretrained download) on RGB frames,
    Resized to 736×480, SimpleInferer. Untrusted (our reader) gives what --trust-bundle (MONAI's ConfigParser) gives
    on an RGB PNG made from the real CT; ``pretrained: true`` (a download) is refused naming it."""
    import SimpleITK as sitk

    from conftest import shared_data

    root = zoo_bundle(tmp_path, "endoscopic_tool_segmentation")
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data("totalsegmentator", "example_ct_sm.nii.gz"))))
    slice_ = np.clip((ct[ct.shape[0] // 2] + 200) / 600 * 255, 0, 255).astype(np.uint8)  # (J, I)
    rgb = np.stack([slice_, slice_[::-1], np.roll(slice_, 7, 1)], -1)
    frame = tmp_path / "frame.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(frame))
    from UNetSigmoidSegLib.engine.files.volume import read_volume

    volume = read_volume(str(frame))
    untrusted = load_model(str(root))
    assert (untrusted.info.architecture, untrusted.info.spatial_dims, untrusted.info.in_channels) == (
        "FlexibleUNet",
        2,
        3,
    )
    options = SegmentOptions(device="cpu", keep_probabilities=True)
    got = segment(volume, untrusted, options)
    want = segment(volume, load_model(str(root), trust_bundle=True), options)
    assert got.masks.shape == (1, *volume.spatial_shape) and got.window.roi_size[:2] == [736, 480]
    np.testing.assert_array_equal(got.masks, want.masks)
    probabilities = got.probabilities.exact
    np.testing.assert_array_equal(probabilities, want.probabilities.exact)
    assert probabilities.shape == (2, *volume.spatial_shape) and float(probabilities.std()) > 1e-4  # not constant
    config = root / "configs" / "inference.json"
    config.write_text(config.read_text().replace('"pretrained": false', '"pretrained": true'))
    with pytest.raises(ModelError, match="pretrained"):
        load_model(str(root))


def test_inspect_says_what_of_the_bundle_is_honoured_replaced_skipped_or_not_applied(tmp_path, guard, capsys):  # noqa: F811
    from UNetSigmoidSegLib.cli import main

    assert main(["inspect", str(zoo_bundle(tmp_path, "prostate_mri_anatomy"))]) == 0
    table = capsys.readouterr().out.split("  the bundle:\n")[1]
    said = {}
    for line in table.splitlines():
        if not line.startswith("    ") or line.startswith("  warning"):
            break
        key, value = line[4:22].strip(), line[23:]
        said.setdefault(key, []).append(value)
    assert (
        "preprocessing: Orientationd, Spacingd, ScaleIntensityd, NormalizeIntensityd, EnsureTyped" in said["honoured"]
    )
    assert "inferer: SlidingWindowInferer (roi 96 96 96, overlap 0.5)" in said["honoured"]
    assert "postprocessing: AsDiscreted, KeepLargestConnectedComponentd, Invertd" in said["honoured"]
    assert said["skipped"] == [
        "LoadImaged, EnsureChannelFirstd, SaveImaged (this product reads the image and writes the files)"
    ]
    assert "--roi-size" in said["replaced if given"][0] and "not applied" not in said
    assert main(["inspect", str(zoo_bundle(tmp_path, "endoscopic_tool_segmentation"))]) == 0
    table = capsys.readouterr().out.split("  the bundle:\n")[1]
    assert "    not applied        Lambdad (warned on every run)" in table.splitlines()
