"""Security rows of the reliability matrix (S…): hostile models, parser bombs, aliased outputs, images that would
give a silent wrong result. Registered into ``matrix_cases.CASES`` and run with the same "nothing lost" checks;
the full hostile suite is ``Testing/security/`` (docs/SECURITY.md)."""

import json
import os
import sys
import zipfile

import numpy as np
import torch

from conftest import REPO, blob_volume, tiny_unet, write_volume
from matrix_cases import case

sys.path.insert(0, str(REPO / "Testing" / "security"))


def _bundle(env, network_def):
    from hostile import make_bundle

    return make_bundle(env.tmp / "hostile-bundle", network_def=network_def)


def _no_marker(env, message):
    assert not (env.tmp / "payload-ran").exists(), "a payload ran"
    return message


@case(
    "S1",
    "cli",
    "bundle `_target_` chaining to os.system, untrusted (must not run)",
    r"not a MONAI class on the allow-list.*Nothing was run",
)
def _(env):
    payload = {"_target_": "monai.utils.module.os.system", "command": f"touch '{env.tmp / 'payload-ran'}'"}
    return _no_marker(env, env.cli_error("segment", env.input, "--model", _bundle(env, payload)))


@case(
    "S2",
    "cli",
    "weights-only checkpoint whose `config.network` runs a command under `_requires_`",
    r"_requires_ would run.*Nothing was run",
)
def _(env):
    from hostile import UNET_DEF

    path = env.tmp / "auto3dseg.pt"
    network = {**UNET_DEF, "_requires_": [{"_target_": "run_cmd", "cmd_list": ["touch", str(env.tmp / "payload-ran")]}]}
    torch.save({"state_dict": tiny_unet(channels=(4, 8, 16)).state_dict(), "config": {"network": network}}, path)
    return _no_marker(env, env.cli_error("segment", env.input, "--model", str(path)))


@case("S3", "cli", "bundle asking for the debugger (`_debug_`)", r"_debug_ would start the Python debugger")
def _(env):
    from hostile import UNET_DEF

    return env.cli_error("segment", env.input, "--model", _bundle(env, {**UNET_DEF, "_debug_": True}))


@case("S4", "cli", "YAML alias bomb (billion laughs)", r"more than 64 YAML aliases")
def _(env):
    from hostile import make_bundle

    root = env.tmp / "yaml-bundle"
    make_bundle(root)
    os.remove(root / "configs" / "inference.json")
    levels = "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10))
    (root / "configs" / "inference.yaml").write_text("network_def: {}\nl0: &l0 [lol]\n" + levels)
    return env.cli_error("segment", env.input, "--model", str(root))


@case("S5", "cli", "zip bomb bundle (0.2 MB → 200 MB)", r"expands .*× \(at most 100×\): a zip bomb")
def _(env):
    archive = env.tmp / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("b/configs/metadata.json", "{}")
        zf.writestr("b/configs/inference.json", json.dumps({"network_def": {}}))
        zf.writestr("b/models/model.pt", b"\0" * (200 * 2**20))
    return env.cli_error("segment", env.input, "--model", str(archive))


@case("S6", "cli", "`-o` naming the input through `./`", r"is the same file as .*which this run reads")
def _(env):
    folder, name = os.path.split(env.input)
    return env.cli_error("segment", env.input, "--model", env.model, "-o", os.path.join(folder, ".", name))


@case("S7", "cli", "`--probabilities` aliasing the segmentation output", r"are the same file")
def _(env):
    out, again = str(env.tmp / "out.nrrd"), os.path.join(str(env.tmp), ".", "out.nrrd")
    return env.cli_error("segment", env.input, "--model", env.model, "-o", out, "--probabilities", again)


@case("S8", "cli", "truncated `.nii.gz` (SimpleITK would fill zeros)", r"compressed data is cut short or corrupt")
def _(env):
    data = open(env.input, "rb").read()
    cut = env.tmp / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    return env.cli_error("segment", str(cut), "--model", env.model)


@case("S9", "cli", "float64 voxels beyond the float32 range", r"beyond the float32 range")
def _(env):
    arr = blob_volume((24, 20, 12)).astype(np.float64)
    arr[1, 2, 3] = 1e200
    return env.cli_error("segment", write_volume(env.tmp / "f64.nrrd", arr), "--model", env.model)


@case("S10", "cli", "DICOM folder holding two series", r"holds 2 DICOM series: .*--series UID")
def _(env):
    from hostile import write_series

    folder = env.tmp / "dicom"
    write_series(folder, "1.2.826.0.1.3680043.2.1125.10", "T1 axial", 8, 0)
    write_series(folder, "1.2.826.0.1.3680043.2.1125.20", "T2 axial", 6, 1)
    return env.cli_error("segment", str(folder), "--model", env.model)


@case(
    "S11",
    "cli",
    "`--spacing 0.02` on a small volume (memory guard after resampling)",
    r"needs about .* GiB of memory.*after preprocessing",
)
def _(env):
    return env.cli_error("segment", env.input, "--model", env.model, "--spacing", "0.02")


@case("S12", "cli", "TorchScript network returning the wrong spatial size", r"must keep the window's size")
def _(env):
    class Half(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)[:, :, ::2, ::2, ::2]

    path = str(env.tmp / "half.ts")
    torch.jit.save(torch.jit.script(Half()), path)
    return env.cli_error("segment", env.input, "--model", path)
