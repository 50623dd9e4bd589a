"""Networks that misbehave when they run (TorchScript files are programs): raising, returning the wrong size, a
mapping, NaN. Each is exit 2 naming the model as the cause — in process, in the worker and in the Slicer
logic — never a traceback or a result on the wrong grid."""

from typing import Dict

import pytest
import torch
from hostile import assert_user_error, cli, guard, volume_file  # noqa: F401

from UNetSigmoidSegLib.cli import main


class Raises(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] > 0:
            raise RuntimeError("the model's own forward failed")
        return self.conv(x)


class HalfSize(Raises):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[:, :, ::2, ::2, ::2]


class Mapping(Raises):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"pred": self.conv(x)}


class NotANumber(Raises):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float("nan")


NETWORKS = {
    "forward raises": (
        Raises,
        r"The network failed on a window of \(\d+, \d+, \d+\): .*the model's own forward failed",
    ),
    "wrong spatial size": (
        HalfSize,
        r"returned an output of shape \(1, 1, \d+, \d+, \d+\) .*must keep the window's size",
    ),
    "returns a mapping": (Mapping, r"The network returned dict, not an image tensor"),
    "returns NaN": (NotANumber, r"The network produced NaN/Inf values"),
}


def _torchscript(path, cls):
    torch.jit.save(torch.jit.script(cls().eval()), str(path))
    return str(path)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_misbehaving_torchscript_is_a_model_error(name, tmp_path, guard, capsys):  # noqa: F811
    cls, expect = NETWORKS[name]
    model = _torchscript(tmp_path / "net.ts", cls)
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(model, image)
    rc = main(["segment", image, "--model", model, "-o", str(tmp_path / "o.seg.nrrd"), "--device", "cpu"])
    assert_user_error(rc, capsys.readouterr().err, expect + r".*fix: The model file may be damaged")
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_misbehaving_torchscript_in_the_worker(tmp_path, guard):  # noqa: F811
    model = _torchscript(tmp_path / "net.ts", HalfSize)
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(model, image)
    run = cli(["segment", image, "--model", model, "-o", str(tmp_path / "o.seg.nrrd"), "--worker"], tmp_path)
    assert_user_error(run.returncode, run.stderr, NETWORKS["wrong spatial size"][1])
