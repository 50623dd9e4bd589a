"""Bundle configs carrying payloads, built as an attacker would (MONAI ConfigParser semantics): every one is
refused untrusted with the key path and the --trust-bundle hint, and no payload ran — no marker file, no
process, no debugger, no read of stdin, no copy of the patient image. Controls prove the payloads are real:
with --trust-bundle MONAI runs them."""

import importlib
import json
import re

import pytest
from hostile import UNET_DEF, Guard, assert_user_error, cli, guard, make_bundle, volume_file  # noqa: F401

from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.errors import ModelError as Refusal

# PyTorch creates its compiler's cache folder in the temp folder when torch._dynamo is first imported (building a
# network on the meta device can, through torch.nn.init): imported here, outside the guarded temp folder, so the
# guard sees what the product and the bundle leave, not PyTorch's import (as in test_zoo_bundles.py)
importlib.import_module("torch._dynamo")


def _sh(marker):
    return f"touch '{marker}'"


def _system(marker, target="monai.utils.module.os.system"):
    return {"_target_": target, "command": _sh(marker)}


def _pre(*steps):
    return {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged", "keys": "image"}, *steps]}


# id -> (inference ids given the marker path, regex the refusal must match: the key path and why)
PAYLOADS = {
    "attribute chain to os.system": (
        lambda m: {"network_def": _system(m)},
        r"network_def\._target_ = 'monai\.utils\.module\.os\.system' is not a MONAI class on the allow-list",
    ),
    "attribute chain to subprocess.run": (
        lambda m: {"network_def": {"_target_": "monai.utils.misc.subprocess.run", "args": ["touch", m]}},
        r"network_def\._target_ = 'monai\.utils\.misc\.subprocess\.run' is not a MONAI class",
    ),
    "attribute chain to pickle.loads": (
        lambda m: {"network_def": {"_target_": "monai.data.utils.pickle.loads", "data": m}},
        r"network_def\._target_ = 'monai\.data\.utils\.pickle\.loads'",
    ),
    "builtin open() without a dot": (
        lambda m: {"network_def": {"_target_": "open", "file": m, "mode": "w"}},
        r"network_def\._target_ = 'open' is not a MONAI class",
    ),
    "builtin exit() kills the host": (
        lambda m: {"network_def": {"_target_": "exit", "code": 0}},
        r"network_def\._target_ = 'exit'",
    ),
    "MONAI short name run_cmd spawns a process": (
        lambda m: {"network_def": {"_target_": "run_cmd", "cmd_list": ["touch", m]}},
        r"network_def\._target_ = 'run_cmd'",
    ),
    "MONAI short name save_state writes a file": (
        lambda m: {"network_def": {"_target_": "save_state", "src": {"a": 1}, "path": m}},
        r"network_def\._target_ = 'save_state'",
    ),
    "MONAI bundle run of another config": (
        lambda m: {"network_def": {"_target_": "monai.bundle.run", "config_file": m}},
        r"network_def\._target_ = 'monai\.bundle\.run'",
    ),
    "download from the network": (
        lambda m: {
            "network_def": UNET_DEF,
            "inferer": {"_target_": "monai.apps.utils.download_url", "url": "http://127.0.0.1:9/x", "filepath": m},
        },
        r"inferer\._target_ = 'monai\.apps\.utils\.download_url'",
    ),
    "component as _target_ (locate of os.system)": (
        lambda m: {
            "network_def": {
                "_target_": {"_target_": "monai.utils.module.locate", "path": "os.system"},
                "command": _sh(m),
            }
        },
        r"network_def\._target_ must name a class; a dict here would make MONAI call its result",
    ),
    "_target_ given as a reference": (
        lambda m: {"network_def": {"_target_": "@evil", "command": _sh(m)}, "evil": "monai.utils.module.os.system"},
        r"network_def\._target_ = '@evil' must name a class",
    ),
    "payload under _requires_": (
        lambda m: {"network_def": {**UNET_DEF, "_requires_": [_system(m)]}},
        r"network_def\._requires_ would run other config items first",
    ),
    "_requires_ as a reference to a payload": (
        lambda m: {"network_def": {**UNET_DEF, "_requires_": "@helper"}, "helper": _system(m)},
        r"network_def\._requires_ would run",
    ),
    "payload under _desc_": (
        lambda m: {"network_def": {**UNET_DEF, "_desc_": _system(m)}},
        r"network_def\._desc_ must be text",
    ),
    "_debug_ opens the debugger": (
        lambda m: {"network_def": {**UNET_DEF, "_debug_": True}},
        r"network_def\._debug_ would start the Python debugger",
    ),
    "_mode_ debug opens the debugger": (
        lambda m: {"network_def": {**UNET_DEF, "_mode_": "debug"}},
        r"network_def\._mode_ = 'debug' would start the Python debugger",
    ),
    "_mode_ callable returns the class": (
        lambda m: {"network_def": {**UNET_DEF, "_mode_": "callable"}},
        r"network_def\._mode_ = 'callable' would hand MONAI a class or function",
    ),
    "patient image written elsewhere (callable torch.save in Lambdad)": (
        lambda m: {
            "preprocessing": _pre(
                {
                    "_target_": "Lambdad",
                    "keys": "image",
                    "func": {"_target_": "monai.utils.module.torch.save", "_mode_": "callable", "f": m},
                }
            )
        },
        r"preprocessing\.transforms\[1\]\.func\._mode_ = 'callable'",
    ),
    "LoadImaged reader string located and called": (
        lambda m: {
            "preprocessing": _pre({"_target_": "LoadImaged", "keys": "image", "reader": "os.system", "command": _sh(m)})
        },
        r"preprocessing\.transforms\[1\]\.reader = 'os\.system' is not one of ITKReader",
    ),
    "network act factory given a callable": (
        lambda m: {
            "network_def": {
                **UNET_DEF,
                "act": [{"_target_": "monai.utils.module.os.system", "_mode_": "callable"}, {"command": _sh(m)}],
            }
        },
        r"network_def\.act\[0\]\._mode_ = 'callable'",
    ),
    "SegResNetDS preprocess callable": (
        lambda m: {
            "network_def": {
                "_target_": "SegResNetDS",
                "init_filters": 4,
                "preprocess": {"_target_": "monai.utils.module.os.system", "_mode_": "callable"},
            }
        },
        r"network_def\.preprocess\._mode_ = 'callable'",
    ),
    "CropForegroundd select_fn callable": (
        lambda m: {
            "preprocessing": _pre(
                {"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "select_fn": _system(m)}
            )
        },
        r"preprocessing\.transforms\[1\]\.select_fn is not an argument this product accepts for CropForegroundd",
    ),
    "Python expression in an argument": (
        lambda m: {"network_def": {**UNET_DEF, "in_channels": f"$__import__('os').system({_sh(m)!r}) or 1"}},
        r"network_def\.in_channels = .*is a Python expression: it would run code",
    ),
    "Python expression as the target": (
        lambda m: {"network_def": {"_target_": f"$__import__('os').system({_sh(m)!r})"}},
        r"network_def\._target_ = .*is a Python expression: it would run code",
    ),
    "Python expression reached through a reference": (
        lambda m: {
            "network_def": {**UNET_DEF, "out_channels": "@n"},
            "n": f"$__import__('os').system({_sh(m)!r}) or 1",
        },
        r"network_def\.out_channels → @n = .*is a Python expression",
    ),
    "network_def is a whole expression": (
        lambda m: {"network_def": f"$__import__('os').system({_sh(m)!r})"},
        r"network_def = .*is a Python expression",
    ),
    "macro reading another file": (
        lambda m: {"network_def": "%" + m + ".json::net"},
        r"network_def = '%.*' is a macro: it would read another config file",
    ),
    "relative reference": (
        lambda m: {"network_def": {**UNET_DEF, "out_channels": "@::in_channels"}},
        r"network_def\.out_channels = '@::in_channels' is a relative or malformed reference",
    ),
    "reference into _meta_": (
        lambda m: {"network_def": {**UNET_DEF, "out_channels": "@_meta_::x"}},
        r"refers to @_meta_::x, which is not defined",
    ),
    "reference cycle": (
        lambda m: {"network_def": {**UNET_DEF, "channels": "@a"}, "a": "@b", "b": "@a"},
        r"refers back to itself",
    ),
    "disabled argument (its default would be used silently)": (
        lambda m: {"network_def": {**UNET_DEF, "norm": {"_target_": "x", "_disabled_": True}}},
        r"network_def\.norm is disabled; only items of a list",
    ),
    "_disabled_ decided by a reference": (
        lambda m: {"network_def": {**UNET_DEF, "_disabled_": "@flag"}, "flag": "$True"},
        r"network_def\._disabled_ = '@flag' must be true or false",
    ),
    "read stdin (sys.stdin.read)": (
        lambda m: {"preprocessing": _pre({"_target_": "sys.stdin.read"})},
        r"preprocessing\.transforms\[1\]\._target_ = 'sys\.stdin\.read'",
    ),
    "interactive console (code.interact)": (
        lambda m: {"network_def": {"_target_": "code.interact", "banner": "x"}},
        r"network_def\._target_ = 'code\.interact'",
    ),
    "breakpoint()": (
        lambda m: {"network_def": {"_target_": "breakpoint"}},
        r"network_def\._target_ = 'breakpoint'",
    ),
    "bundle code (scripts.*)": (
        lambda m: {"network_def": {"_target_": "scripts.net.Net"}},
        r"network_def\._target_ = 'scripts\.net\.Net'",
    ),
    "class not on the allow-list": (
        lambda m: {"network_def": {"_target_": "ViTAutoEnc", "in_channels": 1, "img_size": 96, "patch_size": 16}},
        r"network_def\._target_ = 'ViTAutoEnc' is not a MONAI class on the allow-list",
    ),
    "UNETR attending over too many patches at once": (
        lambda m: {"network_def": {"_target_": "UNETR", "in_channels": 1, "out_channels": 2, "img_size": 512}},
        r"network_def\.img_size = 512 makes 32768 patches for UNETR's attention",
    ),
    "SwinUNETR far larger than its weights (53 G parameters)": (
        lambda m: {
            "network_def": {
                "_target_": "SwinUNETR",
                "in_channels": 1,
                "out_channels": 2,
                "feature_size": 960,
                "depths": [32, 32, 32, 32],
                "num_heads": [32, 32, 32, 32],
            }
        },
        r"The weights do not fit the bundle network SwinUNETR: missing keys",
    ),
    "FlexibleUNet asked to download its backbone's weights": (
        lambda m: {
            "network_def": {
                "_target_": "FlexibleUNet",
                "in_channels": 1,
                "out_channels": 1,
                "backbone": "resnet18",
                "pretrained": True,
            }
        },
        r"network_def\.pretrained = True",
    ),
    "unknown special key": (
        lambda m: {"network_def": {**UNET_DEF, "_import_": "os"}},
        r"network_def\._import_ is a special key this product does not accept",
    ),
    "EnsureTyped dropping the geometry": (
        lambda m: {"preprocessing": _pre({"_target_": "EnsureTyped", "keys": "image", "track_meta": False})},
        r"preprocessing\.transforms\[1\]\.track_meta = False is not true",
    ),
    "inferer passing coordinates to the network": (
        lambda m: {"inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "with_coord": True}},
        r"inferer\.with_coord = True is not false",
    ),
    "resampling to 1 µm (memory)": (
        lambda m: {"preprocessing": _pre({"_target_": "Spacingd", "keys": "image", "pixdim": [0.001, 0.001, 0.001]})},
        r"preprocessing\.transforms\[1\]\.pixdim = \[0\.001, 0\.001, 0\.001\] is not",
    ),
    "network far larger than its weights (memory)": (
        lambda m: {"network_def": {**UNET_DEF, "channels": [4096, 4096, 4096, 4096], "strides": [2, 2, 2]}},
        r"The weights do not fit the bundle network UNet",
    ),
    "4-D network": (
        lambda m: {"network_def": {**UNET_DEF, "spatial_dims": 4}},
        r"network_def\.spatial_dims = 4 is not a whole number in \[2, 3\]",
    ),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_payload_is_refused_untrusted_and_never_runs(name, tmp_path, guard):  # noqa: F811
    build, expect = PAYLOADS[name]
    root = tmp_path / "bundle"
    make_bundle(root, **build(guard.marker()))
    guard.protect(root)
    with pytest.raises(Refusal) as err:
        load_model(str(root))
    message = str(err.value)
    assert re.search(expect, message), message
    if "do not fit" not in message:
        assert "Nothing was run" in message and "--trust-bundle" in err.value.hint, message


# Through the real command line, in a subprocess whose stdin stays open: a debugger prompt or a read of stdin
# would hang until the timeout (a failure); `inspect` is what the panel does when a model is picked.
CLI_CASES = [
    ("_debug_ opens the debugger", "inspect"),
    ("_mode_ debug opens the debugger", "inspect"),
    ("breakpoint()", "inspect"),
    ("interactive console (code.interact)", "inspect"),
    ("read stdin (sys.stdin.read)", "inspect"),
    ("attribute chain to os.system", "segment"),
    ("patient image written elsewhere (callable torch.save in Lambdad)", "segment"),
    ("payload under _requires_", "segment --worker"),
]


@pytest.mark.parametrize("name,command", CLI_CASES, ids=[f"{c}: {n}" for n, c in CLI_CASES])
def test_payload_through_the_command_line(name, command, tmp_path, guard):  # noqa: F811
    build, expect = PAYLOADS[name]
    root = make_bundle(tmp_path / "bundle", **build(guard.marker()))
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(root, image)
    if command == "inspect":
        args = ["inspect", root]
    else:
        args = ["segment", image, "--model", root, "-o", str(tmp_path / "out.seg.nrrd"), "--device", "cpu"]
        args += ["--worker"] if "--worker" in command else []
    run = cli(args, tmp_path, stdin="pipe", timeout=180)
    assert_user_error(run.returncode, run.stderr, expect + r".*Nothing was run.*fix:.*--trust-bundle")
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_parts_that_are_never_read_do_not_run(tmp_path, guard):  # noqa: F811
    """Payloads in ids the product never reads, in postprocessing (data only) and in a disabled transform."""
    marker = guard.marker()
    root = make_bundle(
        tmp_path / "bundle",
        imports=["$import os", f"$os.system({_sh(marker)!r})"],
        initialize=[f"$__import__('os').system({_sh(marker)!r})"],
        run=[_system(marker)],
        preprocessing=_pre(
            {**_system(marker), "_disabled_": True},
            {"_target_": "ScaleIntensityd", "keys": "image"},
        ),
        postprocessing={
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "Lambdad", "keys": "pred", "func": f"$lambda x: __import__('os').system({_sh(marker)!r})"},
                _system(marker),
            ],
        },
    )
    info = load_model(root).info
    assert info.activation == "sigmoid" and info.preprocessing == {"bundle": ["ScaleIntensityd"]}


@pytest.mark.parametrize(
    "name",
    [
        "attribute chain to os.system",
        "MONAI short name run_cmd spawns a process",
        "payload under _requires_",
        "builtin open() without a dot",
        "Python expression in an argument",
    ],
)
def test_control_the_same_payload_runs_when_the_user_trusts_the_bundle(name, tmp_path):
    """The payloads above are real: with trust_bundle MONAI's ConfigParser runs them (documented behaviour)."""
    marker = tmp_path / "trusted-ran"
    root = make_bundle(tmp_path / "bundle", **PAYLOADS[name][0](str(marker)))
    try:
        load_model(root, trust_bundle=True)
    except Refusal:
        pass  # the payload's object is not a network: the load fails after the payload ran
    assert marker.exists(), "the control payload did not run even trusted"


def test_trusted_command_line_says_so_each_time(tmp_path):
    root = make_bundle(tmp_path / "bundle")
    (tmp_path / "tmp").mkdir()
    for _ in range(2):
        run = cli(["inspect", root, "--trust-bundle"], tmp_path)
        assert run.returncode == 0, run.stderr
        assert "warning: --trust-bundle" in run.stderr and "any code in it runs" in run.stderr
        assert "trusted (--trust-bundle)" in run.stdout
    assert json.loads(cli(["inspect", root, "--json"], tmp_path).stdout)["notes"] == []
