"""The headless CLI end to end: outputs, exit codes, batch, DICOM, JSON, bad paths, the real CT."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import REPO, blob_volume, shared_data, tiny_unet, write_volume
from UNetSigmoidSegLib.cli import main


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_unet(out_channels=2, seed=7).state_dict(), path)
    (tmp_path / "model.json").write_text(json.dumps({"labels": ["liver", "spleen"], "activation": "sigmoid"}))
    return str(path)


def test_segment_writes_seg_nrrd_with_names_colours_geometry(tmp_path, model, volume_file, capsys):
    vol = volume_file("ct vol ü.nii.gz")  # space and unicode in the path
    out = tmp_path / "out dir ü" / "result.seg.nrrd"
    out.parent.mkdir()
    prob = tmp_path / "out dir ü" / "prob.nrrd"
    rc = main(["segment", vol, "--model", model, "-o", str(out), "--probabilities", str(prob), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    case = summary["cases"][0]
    assert [s["segment"] for s in case["segments"]] == ["liver", "spleen"]
    assert case["device"] == "cpu" and "CUDA not available" in case["device_reason"] or case["device"] == "cuda"
    seg = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in seg["segments"]] == ["liver", "spleen"]
    assert all(len(s["color"]) == 3 for s in seg["segments"])
    image = sitk.ReadImage(vol)
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(seg["ijkToLPS"], lps, atol=1e-4)
    for s, stats in zip(seg["segments"], case["segments"]):
        assert slicerio.segment_mask(seg, s).sum() == stats["voxels"]
    p = sitk.ReadImage(str(prob))
    assert p.GetSize() == image.GetSize() and p.GetNumberOfComponentsPerPixel() == 2
    arr = sitk.GetArrayFromImage(p)
    assert arr.min() >= 0 and arr.max() <= 1


def test_nifti_labelmap_output_and_overlap_warning(tmp_path, model, volume_file, capsys):
    out = tmp_path / "labels.nii.gz"
    rc = main(["segment", volume_file(), "--model", model, "-o", str(out), "--threshold", "0.0", "0.0"])
    assert rc == 0
    assert "overlap" in capsys.readouterr().err
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))) == {2}


def test_batch_folder_with_progress(tmp_path, model):
    src = tmp_path / "cases"
    src.mkdir()
    for i in range(2):
        write_volume(src / f"case{i}.nrrd", blob_volume((24, 20, 16), seed=i))
    out = tmp_path / "segs"
    out.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli", "segment", str(src), "--model", model, "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=str(REPO / "UNetSigmoidSeg"),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(out)) == ["case0.seg.nrrd", "case1.seg.nrrd"]
    assert "[1/2" in run.stderr and "[2/2 100%]" in run.stderr and "inference" in run.stderr


def test_dicom_series_folder(tmp_path, model):
    out = tmp_path / "dicom.seg.nrrd"
    rc = main(
        [
            "segment",
            str(shared_data("totalsegmentator", "example_ct_dicom")),
            "--model",
            model,
            "-o",
            str(out),
            "--normalization",
            "ct",
            "--ct-window",
            "-200",
            "300",
            "--quiet",
        ]
    )
    assert rc == 0
    seg = slicerio.read_segmentation(str(out))
    assert seg["voxels"].shape[-3:] == (512, 512, 20)


def test_inspect(model, capsys):
    assert main(["inspect", model, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "checkpoint" and info["out_channels"] == 2 and info["labels"] == ["liver", "spleen"]
    assert main(["inspect", model]) == 0
    assert "strides" in capsys.readouterr().out


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli", *args],
        capture_output=True,
        text=True,
        cwd=str(REPO / "UNetSigmoidSeg"),
        timeout=300,
    )


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing_input", "Input not found"),
        ("bad_threshold", "outside [0, 1]"),
        ("bad_activation", "invalid choice"),
        ("missing_model", "Model not found"),
        ("bad_extension", "Unknown segmentation file type"),
        ("two_d", "2-D image"),
    ],
)
def test_user_errors_exit_2_without_traceback(tmp_path, model, volume_file, case, expected):
    vol = volume_file()
    args = {
        "missing_input": [str(tmp_path / "nope.nii.gz"), "--model", model],
        "bad_threshold": [vol, "--model", model, "--threshold", "1.5"],
        "bad_activation": [vol, "--model", model, "--activation", "tanh"],
        "missing_model": [vol, "--model", str(tmp_path / "none.pt")],
        "bad_extension": [vol, "--model", model, "-o", str(tmp_path / "x.png")],
        "two_d": [str(tmp_path / "flat.nrrd"), "--model", model],
    }[case]
    if case == "two_d":
        sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(20, 20).astype(np.float32)), str(tmp_path / "flat.nrrd"))
    run = (
        _run_cli("segment", *args, "-o", str(tmp_path / "o.seg.nrrd"))
        if "-o" not in args
        else _run_cli("segment", *args)
    )
    assert run.returncode == 2, run.stderr
    assert expected in run.stderr and "fix:" in run.stderr
    assert "Traceback" not in run.stderr


def test_unwritable_output_fails_before_inference(tmp_path, model, volume_file):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    target = locked / "o.seg.nrrd"
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            target = tmp_path / "afile" / "o.seg.nrrd"
            (tmp_path / "afile").write_text("x")
        run = _run_cli("segment", volume_file(), "--model", model, "-o", str(target))
    finally:
        os.chmod(locked, stat.S_IRWXU)
    assert run.returncode == 2
    assert ("permission denied" in run.stderr or "does not exist" in run.stderr) and "Traceback" not in run.stderr
    assert "inference" not in run.stderr


def test_real_ct_end_to_end_geometry(tmp_path, model):
    """The real CT from Testing/Data (direction diag(-1,-1,1), 3 mm): output on the exact input grid."""
    ct = shared_data("totalsegmentator", "example_ct_sm.nii.gz")
    out = tmp_path / "ct.nii.gz"
    assert (
        main(
            [
                "segment",
                str(ct),
                "--model",
                model,
                "-o",
                str(out),
                "--normalization",
                "ct",
                "--ct-window",
                "-160",
                "240",
                "--orientation",
                "RAS",
                "--spacing",
                "4",
                "--largest-component",
                "--quiet",
            ]
        )
        == 0
    )
    a, b = sitk.ReadImage(str(ct)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_4d_image_for_a_one_channel_model(tmp_path, model):
    arr = np.stack([blob_volume((16, 16, 8), seed=s) for s in range(3)])  # (T, I, J, K)
    image = sitk.JoinSeries([sitk.GetImageFromArray(a.transpose(2, 1, 0)) for a in arr])
    sitk.WriteImage(image, str(tmp_path / "four_d.nii.gz"))
    run = _run_cli("segment", str(tmp_path / "four_d.nii.gz"), "--model", model, "-o", str(tmp_path / "o.seg.nrrd"))
    assert run.returncode == 2
    assert "expects 1 input channel" in run.stderr and "multi-component / 4-D image with 3" in run.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()
