"""Edge cases found in review: TorchScript depth, output formats, batch names, sidecar and bundle semantics."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import blob_volume, tiny_unet, write_volume
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.cli_paths import expand_inputs, output_paths
from UNetSigmoidSegLib.contract.model import ModelSpec
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.bundle import bundle_activation
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import ModelError, UserError


def test_torchscript_on_a_volume_not_divisible_by_the_depth(tmp_path):
    net = tiny_unet(out_channels=2)
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.ts"))
    vol = read_volume(write_volume(tmp_path / "odd.nii.gz", blob_volume((40, 37, 21))))
    result = segment(vol, load_model(str(tmp_path / "m.ts")), SegmentOptions(device="cpu"))
    assert result.masks.shape[1:] == (40, 37, 21) and result.activation == "softmax"


def test_split_header_formats_are_not_offered_as_outputs(tmp_path, volume_file, unet_ckpt):
    path, _ = unet_ckpt()
    assert main(["segment", volume_file(), "--model", path, "-o", str(tmp_path / "x.mhd"), "--quiet"]) == 2
    assert not list(tmp_path.glob("*.zraw")) and not list(tmp_path.glob(".*partial*"))


def test_batch_folder_skips_earlier_results_and_refuses_name_clashes(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for name in ("ct.nii.gz", "ct.seg.nrrd", "ct_probabilities.nrrd"):
        (src / "a" / name).write_bytes(b"x")
    (src / "b" / "ct.nii.gz").write_bytes(b"x")
    assert [os.path.basename(p) for p in expand_inputs([str(src / "a")])] == ["ct.nii.gz"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match="same output file"):
        output_paths([str(src / "a" / "ct.nii.gz"), str(src / "b" / "ct.nii.gz")], str(out), None)


def test_probabilities_folder_for_one_input(tmp_path):
    folder = tmp_path / "probs"
    folder.mkdir()
    plan = output_paths([str(tmp_path / "ct.nii.gz")], str(tmp_path / "ct.seg.nrrd"), str(folder))[0]
    assert plan["probabilities"] == str(folder / "ct_probabilities.nrrd")


@pytest.mark.parametrize(
    "sidecar,match", [({"activation": "Sigmod"}, "Unknown activation"), ({"threshold": 3}, "outside")]
)
def test_invalid_sidecar_is_a_model_error_before_inference(tmp_path, sidecar, match):
    torch.save(tiny_unet().state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=match):
        load_model(str(tmp_path / "m.pt"))


def test_sidecar_activation_is_case_insensitive(tmp_path):
    torch.save(tiny_unet(out_channels=2).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"activation": "Sigmoid"}))
    assert load_model(str(tmp_path / "m.pt")).info.activation == "sigmoid"


def test_bundle_postprocessing_semantics():
    argmax = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "threshold": 0.5}
    assert bundle_activation([argmax]) == {"activation": "softmax", "threshold": None, "argmax": True}
    probs_only = [{"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.4}]
    assert bundle_activation(probs_only)["activation"] == "none"
    sig = [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.4},
    ]
    assert bundle_activation(sig) == {"activation": "sigmoid", "threshold": 0.4, "argmax": False}


def test_cache_key_follows_the_json_next_to_the_checkpoint(tmp_path):
    torch.save(tiny_unet().state_dict(), tmp_path / "m.pt")
    before = ModelSpec(str(tmp_path / "m.pt")).cache_key()
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["x"]}))
    os.utime(tmp_path / "m.json", ns=(before[1] + 10**9, before[1] + 10**9))
    assert ModelSpec(str(tmp_path / "m.pt")).cache_key() != before


def test_lightning_prefixed_state_dict(tmp_path):
    net = tiny_unet()
    torch.save({"state_dict": {"model." + k: v for k, v in net.state_dict().items()}}, tmp_path / "l.ckpt")
    loaded = load_model(str(tmp_path / "l.ckpt"))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net(x), atol=1e-5)


def test_softmax_labels_drop_the_background_name(tmp_path):
    torch.save(tiny_unet(out_channels=3).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["rest", "liver", "spleen"]}))
    vol = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((20, 20, 12))))
    result = segment(vol, load_model(str(tmp_path / "m.pt")), SegmentOptions(activation="softmax", device="cpu"))
    assert result.labels == ["liver", "spleen"]
    assert np.all(result.masks.sum(axis=0) <= 1)


def test_wrong_number_of_thresholds_fails_before_inference(tmp_path):
    torch.save(tiny_unet(out_channels=3).state_dict(), tmp_path / "m.pt")
    vol = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((20, 20, 12))))
    stages = []
    with pytest.raises(UserError, match="2 thresholds given for 3 segments"):
        segment(
            vol,
            load_model(str(tmp_path / "m.pt")),
            SegmentOptions(activation="sigmoid", threshold=[0.3, 0.4], device="cpu"),
            progress=lambda s, f, m: stages.append(s),
        )
    assert stages == []
