"""Images that would give a silent wrong result: truncated or corrupt files (SimpleITK reads a short NIfTI with
zeros), values that overflow float32, a DICOM folder holding several series. Each is exit 2 naming the
problem, the input is unchanged and nothing is written."""

import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hostile import assert_user_error, guard, write_series  # noqa: F401

from conftest import blob_volume, tiny_unet, write_volume
from UNetSigmoidSegLib.cli import main

T1_UID = "1.2.826.0.1.3680043.2.1125.10"
T2_UID = "1.2.826.0.1.3680043.2.1125.20"


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_unet().state_dict(), path)
    return str(path)


def _segment(path, model, tmp_path, *extra):
    out = str(tmp_path / "out.nii.gz")
    return main(
        ["segment", str(path), "--model", model, "-o", out, "--device", "cpu", "--normalization", "none", *extra]
    )


def _image_bytes(tmp_path, name):
    path = write_volume(tmp_path / name, blob_volume((24, 20, 12)))
    return open(path, "rb").read()


def _cut(fraction):
    return lambda data: data[: int(len(data) * fraction)]


def _flip_middle(data):
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]


def _short_payload(data):  # a complete gzip stream whose NIfTI inside lacks its last 1000 bytes
    return gzip.compress(gzip.decompress(data)[:-1000])


BROKEN = {
    "truncated .nii.gz (half)": ("ct.nii.gz", _cut(0.5), r"compressed data is cut short or corrupt"),
    "truncated .nii.gz (last 1 %)": ("ct.nii.gz", _cut(0.99), r"compressed data is cut short or corrupt"),
    "corrupt bytes inside .nii.gz": ("ct.nii.gz", _flip_middle, r"cut short or corrupt"),
    "complete gzip of a short NIfTI": ("ct.nii.gz", _short_payload, r"is truncated \([\d,]+ of the [\d,]+ bytes"),
    "truncated .nii": ("ct.nii", _cut(0.7), r"is truncated \([\d,]+ of the [\d,]+ bytes its header announces\)"),
    "truncated .nrrd": ("ct.nrrd", _cut(0.6), r"Cannot read image .*ct\.nrrd"),
    "truncated .mha": ("ct.mha", _cut(0.6), r"Cannot read image .*ct\.mha"),
    "not an image at all": ("ct.nii.gz", lambda data: b"<html>404</html>", r"Cannot read image"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_truncated_or_corrupt_image_is_an_error(name, tmp_path, model, guard, capsys):  # noqa: F811
    file_name, damage, expect = BROKEN[name]
    data = _image_bytes(tmp_path, file_name)
    path = tmp_path / file_name
    path.write_bytes(damage(data))
    guard.protect(path, model)
    assert_user_error(_segment(path, model, tmp_path), capsys.readouterr().err, expect + r".*fix: .*truncated")
    assert not (tmp_path / "out.nii.gz").exists()


def test_float64_beyond_float32_is_an_error(tmp_path, model, guard, capsys):  # noqa: F811
    arr = blob_volume((24, 20, 12)).astype(np.float64)
    arr[3, 4, 5] = 1e300  # finite in float64, infinite once the network's float32 copy is made
    path = write_volume(tmp_path / "big.nrrd", arr)
    guard.protect(path, model)
    err = assert_user_error(_segment(path, model, tmp_path), capsys.readouterr().err, r"beyond the float32 range")
    assert "1e+300" in err


def test_big_endian_nifti_is_read_and_its_truncation_is_not(tmp_path, model, guard, capsys):  # noqa: F811
    import nibabel

    header = nibabel.Nifti1Header(endianness=">")
    image = nibabel.Nifti1Image(blob_volume((24, 20, 12)).astype(">f4"), np.diag([1.5, 1.5, 2.0, 1.0]), header=header)
    path = str(tmp_path / "big-endian.nii")
    nibabel.save(image, path)
    assert _segment(path, model, tmp_path, "--quiet") == 0
    os.remove(tmp_path / "out.nii.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 4000])
    guard.protect(path)
    assert_user_error(_segment(path, model, tmp_path), capsys.readouterr().err, r"is truncated")


@pytest.fixture
def two_series(tmp_path):
    folder = tmp_path / "dicom"
    write_series(folder, T1_UID, "T1 axial", 12, 0)
    write_series(folder, T2_UID, "T2 axial", 9, 1)
    return folder


def test_dicom_folder_with_two_series_lists_them(two_series, tmp_path, model, guard, capsys):  # noqa: F811
    guard.protect(two_series, model)
    err = assert_user_error(_segment(two_series, model, tmp_path), capsys.readouterr().err, r"holds 2 DICOM series")
    assert f"{T1_UID} (T1 axial, 12 slices)" in err and f"{T2_UID} (T2 axial, 9 slices)" in err
    assert "--series UID" in err and not (tmp_path / "out.nii.gz").exists()


def test_series_option_picks_one(two_series, tmp_path, model, guard):  # noqa: F811
    guard.protect(two_series, model)
    assert _segment(two_series, model, tmp_path, "--series", T2_UID, "--quiet") == 0
    assert sitk.ReadImage(str(tmp_path / "out.nii.gz")).GetSize() == (20, 24, 9)
    os.remove(tmp_path / "out.nii.gz")


@pytest.mark.parametrize(
    "which,expect",
    [
        ("unknown UID", r"has no DICOM series 1\.2\.3; it holds: .*T1 axial"),
        ("a file", r"is a file, not a DICOM folder"),
    ],
)
def test_series_option_that_cannot_apply(which, expect, two_series, tmp_path, model, guard, capsys):  # noqa: F811
    target = two_series if which == "unknown UID" else write_volume(tmp_path / "ct.nii.gz", blob_volume((24, 20, 12)))
    guard.protect(target, model)
    rc = _segment(target, model, tmp_path, "--series", "1.2.3")
    assert_user_error(rc, capsys.readouterr().err, expect)
