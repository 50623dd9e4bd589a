"""The user's files are never overwritten: outputs that alias an input, the model or the other output — by
``./``, ``..``, symbolic links, hard links or a different case — are refused before anything runs."""

import os

import pytest
import torch
from hostile import assert_user_error, guard, make_bundle, volume_file  # noqa: F401

from conftest import tiny_unet
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.engine.files.outputs import write_segmentation
from UNetSigmoidSegLib.engine.files.probfile import write_probabilities
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import OutputError


@pytest.fixture
def files(tmp_path, guard, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    image = volume_file(tmp_path / "ct.nii.gz")
    model = tmp_path / "model.pt"
    torch.save(tiny_unet().state_dict(), model)
    bundle = make_bundle(tmp_path / "bundle")
    (tmp_path / "bundle" / "docs").mkdir()
    (tmp_path / "bundle" / "docs" / "sample.nii.gz").write_bytes(open(image, "rb").read())
    guard.protect(image, model, bundle)
    return {"image": image, "model": str(model), "bundle": bundle}


def _link(tmp_path, name, target, hard=False):
    path = tmp_path / name
    (os.link if hard else os.symlink)(target, path)
    return str(path)


ALIASES = {
    "-o is the input": (lambda t, f: ["-o", f["image"]], r"segmentation output .*ct\.nii\.gz is the same file as"),
    "-o ./input": (lambda t, f: ["-o", "./ct.nii.gz"], r"is the same file as .*ct\.nii\.gz, which this run reads"),
    "-o dir/../input": (lambda t, f: ["-o", "bundle/../ct.nii.gz"], r"is the same file as"),
    "-o symlink to the input": (lambda t, f: ["-o", _link(t, "link.nii.gz", f["image"])], r"is the same file as"),
    "-o hard link to the input": (
        lambda t, f: ["-o", _link(t, "hard.nii.gz", f["image"], hard=True)],
        r"hard\.nii\.gz is the same file as .*ct\.nii\.gz",
    ),
    "-o through a symlinked folder": (
        lambda t, f: ["-o", os.path.join(_link(t, "linkdir", str(t)), "ct.nii.gz")],
        r"is the same file as",
    ),
    "--probabilities is the input": (  # through a .nrrd link: a NIfTI name is refused for its format first
        lambda t, f: ["-o", "out.seg.nrrd", "--probabilities", _link(t, "prob.nrrd", f["image"])],
        r"probabilities output .* is the same file as",
    ),
    "-o symlink to the model": (
        lambda t, f: ["-o", _link(t, "model.nii.gz", f["model"])],
        r"model\.nii\.gz is the same file as .*model\.pt",
    ),
    "-o a file inside the bundle folder": (
        lambda t, f: ["-o", "bundle/docs/sample.nii.gz"],
        r"is the same file as .*bundle/docs/sample\.nii\.gz",
    ),
    "--probabilities ./ the segmentation": (
        lambda t, f: ["-o", "out.nrrd", "--probabilities", "./out.nrrd"],
        r"probabilities output \./out\.nrrd and the segmentation output out\.nrrd are the same file",
    ),
    "--probabilities differing only in case": (
        lambda t, f: ["-o", "out.nrrd", "--probabilities", "OUT.nrrd"],
        r"are the same file \(paths that differ only in case are one file on macOS and Windows\)",
    ),
}


@pytest.mark.parametrize("name", list(ALIASES))
def test_output_aliasing_a_read_file_or_the_other_output_is_refused(name, files, tmp_path, capsys):
    build, expect = ALIASES[name]
    model = files["bundle"] if "bundle" in name else files["model"]
    args = ["segment", files["image"], "--model", model, "--device", "cpu", *build(tmp_path, files)]
    rc = main(args)
    assert_user_error(rc, capsys.readouterr().err, expect + r".*fix:")
    assert not (tmp_path / "out.nrrd").exists() and not (tmp_path / "out.seg.nrrd").exists()


def test_engine_writers_refuse_a_protected_path(files, tmp_path):
    result = segment(read_volume(files["image"]), load_model(files["model"]), SegmentOptions(device="cpu"))
    link = _link(tmp_path, "again.nii.gz", files["image"])
    with pytest.raises(OutputError, match="is the same file as"):
        write_segmentation(result, link, protected=[files["image"]])
    to_model = _link(tmp_path, "m.nrrd", files["model"])
    with pytest.raises(OutputError, match="is the same file as"):
        write_probabilities(result, to_model, protected=[files["model"]])
    write_segmentation(result, str(tmp_path / "fine.seg.nrrd"), protected=[files["image"], files["model"]])
    assert (tmp_path / "fine.seg.nrrd").exists()
    for path in (tmp_path / "fine.seg.nrrd", link, to_model):
        os.remove(path)
