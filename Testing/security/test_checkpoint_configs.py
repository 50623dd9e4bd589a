"""A weights-only checkpoint is still untrusted: its ``config`` (MONAIAuto3DSeg layout) and the JSON next to it
are read by the same validator as a bundle. Payloads never run; wrong types are exit 2 with one paragraph."""

import json

import pytest
import torch
from hostile import UNET_DEF, assert_user_error, cli, guard, volume_file  # noqa: F401

from conftest import tiny_unet
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.errors import ModelError


def _checkpoint(path, network=None, **config):
    state = tiny_unet(channels=(4, 8, 16)).state_dict()
    if network is not None:
        config["network"] = network
    torch.save({"state_dict": state, "config": config, "epoch": 3}, path)
    return str(path)


def _system(marker):
    return {"_target_": "monai.utils.module.os.system", "command": f"touch '{marker}'"}


NETWORK_PAYLOADS = {
    "attribute chain to os.system": (_system, r"config\.network\).*: network\._target_ = 'monai\.utils\.module\.os"),
    "run_cmd spawns a process": (
        lambda m: {"_target_": "run_cmd", "cmd_list": ["touch", m]},
        r"network\._target_ = 'run_cmd'",
    ),
    "payload under _requires_": (lambda m: {**UNET_DEF, "_requires_": [_system(m)]}, r"network\._requires_ would run"),
    "_debug_ opens the debugger": (lambda m: {**UNET_DEF, "_debug_": True}, r"network\._debug_ would start"),
    "_mode_ callable": (lambda m: {**UNET_DEF, "_mode_": "callable"}, r"network\._mode_ = 'callable'"),
    "Python expression": (
        lambda m: {**UNET_DEF, "in_channels": f"$__import__('os').system(\"touch '{m}'\") or 1"},
        r"network\.in_channels = .*Python expression: it would run code",
    ),
    "builtin open()": (lambda m: {"_target_": "open", "file": m, "mode": "w"}, r"network\._target_ = 'open'"),
    "network larger than its weights": (
        lambda m: {**UNET_DEF, "channels": [4096, 4096, 4096]},
        r"The weights do not fit the UNet of the checkpoint's config",
    ),
}


@pytest.mark.parametrize("name", list(NETWORK_PAYLOADS))
def test_checkpoint_config_payload_is_refused(name, tmp_path, guard):  # noqa: F811
    build, expect = NETWORK_PAYLOADS[name]
    path = _checkpoint(tmp_path / "model.pt", build(guard.marker()), sigmoid=True)
    guard.protect(path)
    with pytest.raises(ModelError, match=expect):
        load_model(path)


def test_checkpoint_config_payload_through_inspect_and_the_worker(tmp_path, guard):  # noqa: F811
    """What the panel does when a model is picked (inspect), and a worker run, with stdin left open."""
    path = _checkpoint(tmp_path / "model.pt", {**UNET_DEF, "_debug_": True, "_requires_": [_system(guard.marker())]})
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(path, image)
    run = cli(["inspect", path], tmp_path, stdin="pipe", timeout=120)
    assert_user_error(run.returncode, run.stderr, r"config\.network.*would .*Nothing was run")
    out = str(tmp_path / "out.seg.nrrd")
    run = cli(["segment", image, "--model", path, "-o", out, "--worker"], tmp_path, stdin="pipe", timeout=180)
    assert_user_error(run.returncode, run.stderr, r"config\.network.*Nothing was run.*--trust-bundle")


@pytest.mark.parametrize(
    "config,expect",
    [
        ({"sigmoid": "yes"}, r"sigmoid must be true or false"),
        ({"class_names": 5}, r"class_names must be a list"),
        ({"class_names": [["a"]]}, r"class_names holds \['a'\], not a name"),
        ({"roi_size": "x"}, r"Roi size 'x' is not a number"),
        ({"roi_size": [96, -1, 96]}, r"Roi size -1 is outside"),
        ({"resample_resolution": [0, 0, 0]}, r"Spacing 0 is outside"),
        ({"normalize_mode": "range", "intensity_bounds": [240, -160]}, r"low must be below high"),
    ],
)
def test_auto3dseg_config_fields_with_wrong_types(config, expect, tmp_path, guard, capsys):  # noqa: F811
    path = _checkpoint(tmp_path / "model.pt", dict(UNET_DEF), **config)
    guard.protect(path)
    rc = main(["inspect", path])
    assert_user_error(rc, capsys.readouterr().err, expect)


SIDECARS = {
    "labels is a number": ({"labels": 5}, r"model\.json is invalid: .*[Ll]abels"),
    "labels is a string": ({"labels": "liver"}, r"Labels must be a list of names"),
    "roi_size is text": ({"roi_size": "x"}, r"Roi size 'x' is not a number"),
    "threshold is text": ({"threshold": "high"}, r"Threshold 'high' is not a number"),
    "threshold outside [0, 1]": ({"threshold": 2}, r"Threshold 2 is outside \[0, 1\]"),
    "unknown field (typo)": ({"threshhold": 0.4}, r"unknown field\(s\): threshhold"),
    "activation not known": ({"activation": "relu"}, r"Unknown activation 'relu'"),
    "spacing negative": ({"spacing": [-1, 1, 1]}, r"Spacing -1 is outside"),
    "network act as a component": (
        {"network": {"act": {"_target_": "monai.utils.module.os.system", "command": "true"}}},
        r"network\.act = .* is not a layer name",
    ),
    "network channels huge": (
        {"network": {"channels": [4096, 4096, 4096]}},
        r"The weights do not fit the UNet",
    ),
    "network setting unknown": ({"network": {"preprocess": "x"}}, r"network\.preprocess is not a UNet setting"),
    "not an object": ([1, 2], r"must hold a JSON object"),
    "not JSON": ("{'a': 1", r"is not valid JSON"),
}


@pytest.mark.parametrize("name", list(SIDECARS))
def test_json_next_to_the_checkpoint_with_wrong_types(name, tmp_path, guard, capsys):  # noqa: F811
    data, expect = SIDECARS[name]
    model = tmp_path / "model.pt"
    torch.save(tiny_unet(channels=(4, 8, 16)).state_dict(), model)
    (tmp_path / "model.json").write_text(data if isinstance(data, str) else json.dumps(data))
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(model, tmp_path / "model.json", image)
    rc = main(["segment", image, "--model", str(model), "-o", str(tmp_path / "o.seg.nrrd"), "--device", "cpu"])
    assert_user_error(rc, capsys.readouterr().err, expect)
    assert not (tmp_path / "o.seg.nrrd").exists()
