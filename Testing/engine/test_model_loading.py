"""Model loading: format detection, UNet hyper-parameter detection, layouts and every bad checkpoint."""

import os
import pickle
import zipfile

import pytest
import torch

from conftest import tiny_unet, write_json
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.loading.unet import detect_unet
from UNetSigmoidSegLib.errors import ModelError


def _same_outputs(a, b):
    x = torch.randn(1, a.info.in_channels if hasattr(a, "info") else 1, 16, 16, 16)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=(4, 8), res_units=0, norm="batch"),
        dict(channels=(4, 8, 16, 32), res_units=2, norm="instance"),
        dict(channels=(4, 8, 16), res_units=1, norm="batch", in_channels=2, out_channels=3),
        dict(channels=(4, 8, 16), res_units=0, norm="instance", act="relu"),
    ],
)
def test_plain_state_dict_detected_and_equal(unet_ckpt, kwargs):
    path, net = unet_ckpt(**kwargs)
    loaded = load_model(path)
    info = loaded.info
    assert info.format == "checkpoint"
    assert info.network_args["channels"] == list(kwargs["channels"])
    assert info.network_args["num_res_units"] == kwargs["res_units"]
    assert info.in_channels == kwargs.get("in_channels", 1) and info.out_channels == kwargs.get("out_channels", 1)
    assert info.activation == ("sigmoid" if kwargs.get("out_channels", 1) == 1 else "softmax")
    x = torch.randn(1, info.in_channels, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net(x), atol=1e-5)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "network", "net", "module"])
def test_nested_and_prefixed_layouts(unet_ckpt, wrap):
    path, net = unet_ckpt(wrap=wrap)
    loaded = load_model(path)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net(x), atol=1e-5)


def test_auto3dseg_layout_with_config(tmp_path):
    from monai.networks.nets import SegResNetDS

    torch.manual_seed(0)
    net = SegResNetDS(spatial_dims=3, init_filters=4, in_channels=1, out_channels=3, blocks_down=(1, 1)).eval()
    config = {
        "network": {
            "_target_": "SegResNetDS",
            "init_filters": 4,
            "in_channels": 1,
            "out_channels": 3,
            "blocks_down": [1, 1],
        },
        "roi_size": [32, 32, 32],
        "sigmoid": False,
        "class_names": ["liver", "spleen"],
        "normalize_mode": "range",
        "intensity_bounds": [-100, 200],
        "resample_resolution": [2, 2, 2],
        "orientation_ras": True,
    }
    path = tmp_path / "model.pt"
    torch.save({"state_dict": net.state_dict(), "config": config, "epoch": 5, "best_metric": 0.9}, path)
    info = load_model(str(path)).info
    assert info.architecture.startswith("SegResNetDS")
    assert info.activation == "softmax" and info.labels == ["liver", "spleen"] and info.roi_size == [32, 32, 32]
    assert info.preprocessing == {
        "spacing": [2, 2, 2],
        "orientation": "RAS",
        "normalization": "range-sigmoid",
        "ct_window": [-100, 200],
    }


def test_auto3dseg_config_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    config = {"network": {"_target_": "$__import__('pathlib').Path(%r).touch()" % str(marker)}}
    path = tmp_path / "model.pt"
    torch.save({"state_dict": tiny_unet().state_dict(), "config": config}, path)
    with pytest.raises(ModelError, match="run code"):
        load_model(str(path))
    assert not marker.exists()


def test_sidecar_json_sets_strides_labels_and_activation(tmp_path):
    from monai.networks.nets import UNet

    torch.manual_seed(1)
    net = UNet(3, 1, 2, (4, 8, 16), (2, 1), num_res_units=1).eval()
    path = tmp_path / "liver.pth"
    torch.save(net.state_dict(), path)
    write_json(
        tmp_path / "liver.json",
        {"network": {"strides": [2, 1]}, "labels": ["liver", "tumour"], "activation": "sigmoid", "threshold": 0.4},
    )
    loaded = load_model(str(path))
    assert loaded.info.network_args["strides"] == [2, 1]
    assert (
        loaded.info.labels == ["liver", "tumour"]
        and loaded.info.activation == "sigmoid"
        and loaded.info.threshold == 0.4
    )
    assert not any(n.startswith("strides") for n in loaded.info.notes)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net(x), atol=1e-5)


def test_torchscript(tmp_path):
    net = tiny_unet(out_channels=2)
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = load_model(str(path))
    assert loaded.info.format == "torchscript" and loaded.info.in_channels == 1
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net(x), atol=1e-5)


def test_detect_reports_assumptions():
    args, notes = detect_unet(tiny_unet(act="relu", res_units=0).state_dict())
    assert args["act"] == "relu"
    assert any("strides" in n for n in notes) and any("ReLU" in n for n in notes)
    # with residual units the strides are read from the weights: no strides note (issue #12)
    args, notes = detect_unet(tiny_unet(act="relu", res_units=1).state_dict())
    assert args["strides"] == [2, 2] and not any("strides" in n for n in notes)


# ----------------------------------------------------------------------------- bad checkpoints


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope.pt"))


def test_empty_file(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(str(tmp_path / "e.pt"))


def test_truncated_checkpoint(unet_ckpt, tmp_path):
    path, _ = unet_ckpt()
    data = open(path, "rb").read()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        load_model(str(tmp_path / "t.pt"))


@pytest.mark.parametrize("seed", range(60))
def test_random_bytes(tmp_path, seed):
    """Garbage of any kind (it trips pickle in many different ways) is one clear error."""
    import numpy as np

    (tmp_path / "r.pt").write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        load_model(str(tmp_path / "r.pt"))


def test_pickled_whole_model_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(tiny_unet(), path)
    with pytest.raises(ModelError) as err:
        load_model(str(path))
    assert "pickled Python object" in err.value.message and "state_dict()" in err.value.hint


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(marker)}, path)
    with pytest.raises(ModelError, match="references code") as err:
        load_model(str(path))
    assert "Nothing in it was run" in err.value.message
    assert not marker.exists()
    # a plain (non-torch) pickle with code too
    with open(tmp_path / "evil2.pkl", "wb") as f:
        pickle.dump(_Evil(marker), f)
    with pytest.raises(ModelError):
        load_model(str(tmp_path / "evil2.pkl"))
    assert not marker.exists()


def test_wrong_keys_name_missing_and_unexpected(tmp_path):
    state = tiny_unet().state_dict()
    state.pop("model.1.submodule.0.residual.weight")
    state["model.9.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path / "bad.pt"))
    assert "missing keys" in err.value.message and "unexpected keys" in err.value.message


def test_not_a_unet(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "lin.pt")
    with pytest.raises(ModelError, match="do not look like a MONAI UNet") as err:
        load_model(str(tmp_path / "lin.pt"))
    assert "bundle" in err.value.hint


def test_no_weights_inside(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ModelError, match="No weights found"):
        load_model(str(tmp_path / "meta.pt"))


def test_folder_that_is_not_a_bundle(tmp_path):
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        load_model(str(tmp_path))


def test_zip_with_unsafe_paths(tmp_path):
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("b/configs/metadata.json", "{}")
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(ModelError, match="unsafe path"):
        load_model(str(path))
    assert not (tmp_path.parent.parent / "escape.txt").exists()
