"""Probability files that say what they hold, `threshold` on them equal to a re-run, and the CLI's .seg.nrrd
terminology — against real torch/MONAI runs through the command line and the Python loader."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import tiny_unet
from UNetSigmoidSegLib import NOT_CLINICAL_ASCII
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract.terminology import terminology_entry, terminology_string
from UNetSigmoidSegLib.engine.files.probfile import load_probabilities
from UNetSigmoidSegLib.errors import InputError


def _model(tmp_path, out_channels, activation, labels, seed=3):
    path = tmp_path / f"model_{activation}.pt"
    torch.save(tiny_unet(out_channels=out_channels, seed=seed).state_dict(), path)
    (tmp_path / f"model_{activation}.json").write_text(json.dumps({"labels": labels, "activation": activation}))
    return str(path)


def _masks(path):
    seg = slicerio.read_segmentation(str(path))
    return [s["name"] for s in seg["segments"]], np.asarray(seg["voxels"])


def _fields(path):
    image = sitk.ReadImage(str(path))
    return {k: image.GetMetaData(k) for k in image.GetMetaDataKeys() if k.startswith("UNetSigmoidSeg.")}, image


@pytest.mark.parametrize(
    "out_channels,activation,labels,threshold",
    [(2, "sigmoid", ["liver", "kidney_left"], "0.3"), (3, "softmax", ["liver", "spleen"], "0.4")],
)
def test_threshold_command_equals_a_rerun(tmp_path, volume_file, out_channels, activation, labels, threshold):
    vol = volume_file("ct.nii.gz")
    model = _model(tmp_path, out_channels, activation, labels)
    common = ["--model", model, "--quiet", "--largest-component"]
    assert main(["segment", vol, *common, "-o", str(tmp_path / "a.seg.nrrd"), "--probabilities", str(tmp_path)]) == 0
    prob = tmp_path / "ct_probabilities.nrrd"
    fields, image = _fields(prob)
    components = (["background"] if activation == "softmax" else []) + labels
    assert fields["UNetSigmoidSeg.Activation"] == activation
    assert json.loads(fields["UNetSigmoidSeg.Components"]) == components
    assert fields["UNetSigmoidSeg.Quantization"] == "none"
    assert fields["UNetSigmoidSeg.Notice"] == NOT_CLINICAL_ASCII
    assert json.loads(fields["UNetSigmoidSeg.Cleanup"])["largest_component"] is True
    assert image.GetNumberOfComponentsPerPixel() == len(components)
    data = sitk.GetArrayFromImage(image)
    if activation == "softmax":  # every class's probability, not the winner's confidence: they sum to one
        np.testing.assert_allclose(data.sum(axis=-1), 1.0, atol=1e-5)
    out = tmp_path / "again"
    assert main(["threshold", str(prob), "--threshold", threshold, "-o", str(out) + "/"]) == 0
    assert (out / "ct.seg.nrrd").is_file()  # the "_probabilities" suffix is dropped from the name
    rerun = tmp_path / "rerun.seg.nrrd"
    assert main(["segment", vol, *common, "--threshold", threshold, "-o", str(rerun)]) == 0
    names, voxels = _masks(out / "ct.seg.nrrd")
    rerun_names, rerun_voxels = _masks(rerun)
    assert names == rerun_names == labels
    assert voxels.any() and np.array_equal(voxels, rerun_voxels)
    by_folder = tmp_path / "by_folder"  # a folder of runs: its *_probabilities files only (not a.seg.nrrd, the model)
    assert main(["threshold", str(tmp_path), "--threshold", threshold, "-o", str(by_folder) + "/"]) == 0
    assert sorted(p.name for p in by_folder.iterdir()) == ["ct.seg.nrrd"]
    assert np.array_equal(_masks(by_folder / "ct.seg.nrrd")[1], rerun_voxels)
    first_names, first = _masks(tmp_path / "a.seg.nrrd")
    assert not np.array_equal(first, voxels), "the new threshold must change something for this test to mean much"


def test_python_loader_rethresholds_exactly_like_the_run(tmp_path, volume_file):
    from UNetSigmoidSegLib.engine.files.volume import read_volume

    vol = volume_file("mr.nii.gz")
    model = _model(tmp_path, 1, "sigmoid", ["brain"])
    prob = tmp_path / "mr_probabilities.nrrd"
    assert (
        main(["segment", vol, "--model", model, "-q", "-o", str(tmp_path / "x.nii.gz"), "--probabilities", str(prob)])
        == 0
    )
    loaded = load_probabilities(str(prob))
    assert loaded.labels == ["brain"] and loaded.thresholds == [0.5]
    assert np.allclose(loaded.affine, read_volume(vol).affine, atol=1e-6)
    for t in ("0.2", "0.77"):
        rerun = tmp_path / f"rerun_{t}.nii.gz"
        assert main(["segment", vol, "--model", model, "-q", "--threshold", t, "-o", str(rerun)]) == 0
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(rerun))).transpose(2, 1, 0) > 0
        np.testing.assert_array_equal(loaded.rethreshold(float(t))[0], expected)


def test_probability_file_refusals(tmp_path, volume_file, capsys):
    vol = volume_file("ct.nii.gz")
    model = _model(tmp_path, 1, "sigmoid", ["liver"])
    rc = main(
        ["segment", vol, "--model", model, "-q", "-o", str(tmp_path / "s.seg.nrrd"), "--probabilities", "p.nii.gz"]
    )
    assert rc == 2 and "NRRD or MHA" in capsys.readouterr().err
    assert not (tmp_path / "s.seg.nrrd").exists()  # refused before the run
    assert main(["threshold", vol, "-o", str(tmp_path / "t.seg.nrrd")]) == 2  # an image, not a probability file
    assert "not a probability file" in capsys.readouterr().err
    prob = tmp_path / "p.nrrd"
    assert (
        main(["segment", vol, "--model", model, "-q", "-o", str(tmp_path / "s.seg.nrrd"), "--probabilities", str(prob)])
        == 0
    )
    _fields_, image = _fields(prob)
    tampered = {
        "Components": '["liver", "extra"]',
        "Activation": "exec",
        "Thresholds": "[2]",
        "Cleanup": '{"rm": true}',
        "Colors": "{",
    }
    for key, value in tampered.items():
        bad = sitk.Image(image)
        bad.SetMetaData("UNetSigmoidSeg." + key, value)
        sitk.WriteImage(bad, str(tmp_path / "bad.nrrd"))
        with pytest.raises(InputError):
            load_probabilities(str(tmp_path / "bad.nrrd"))
    over = sitk.Image(image) * 2.0
    for key in image.GetMetaDataKeys():
        over.SetMetaData(key, image.GetMetaData(key))
    sitk.WriteImage(over, str(tmp_path / "over.nrrd"))
    with pytest.raises(InputError, match="outside"):
        load_probabilities(str(tmp_path / "over.nrrd"))
    target = tmp_path / "t.seg.nrrd"
    target.write_bytes(b"keep")
    assert main(["threshold", str(prob), "-o", str(target)]) == 2  # an existing output is refused...
    assert target.read_bytes() == b"keep" and "--overwrite" in capsys.readouterr().err
    assert main(["threshold", str(prob), "-o", str(prob)]) == 2  # ...and the input never is an output
    assert main(["threshold", str(prob), "-o", str(target), "--overwrite"]) == 0


def test_cli_seg_nrrd_has_slicer_terminology_colours_and_notice(tmp_path, volume_file):
    vol = volume_file("ct.nii.gz")
    labels = ["Bladder", "kidney_left", "kidney_right", "tumour"]
    model = _model(tmp_path, 4, "sigmoid", labels)
    out = tmp_path / "o.seg.nrrd"
    assert main(["segment", vol, "--model", model, "-q", "-o", str(out)]) == 0
    seg = slicerio.read_segmentation(str(out))
    segments = {s["name"]: s for s in seg["segments"]}
    assert segments["Bladder"]["terminology"]["type"] == ["SCT", "89837001", "Bladder"]
    assert segments["kidney_left"]["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    assert segments["kidney_right"]["terminology"]["typeModifier"] == ["SCT", "24028007", "Right"]
    assert segments["tumour"]["terminology"]["type"] == ["SCT", "85756007", "Tissue"]  # vtkSegment's default
    np.testing.assert_allclose(segments["Bladder"]["color"], np.array([222, 154, 132]) / 255.0, atol=1e-5)
    assert len({tuple(s["color"]) for s in seg["segments"]}) >= 3
    header = open(out, "rb").read(8192).decode("latin-1")
    assert f"UNetSigmoidSeg.Notice:={NOT_CLINICAL_ASCII}" in header
    for name in ("Bladder", "kidney_left"):  # slicerio writes the very tag the Slicer module sets
        assert f"TerminologyEntry:{terminology_string(name)}|" in header
        assert terminology_entry(name)["category"] == ["SCT", "123037004", "Anatomical Structure"]
    labelmap = tmp_path / "o.nii.gz"
    assert main(["segment", vol, "--model", model, "-q", "-o", str(labelmap)]) == 0
    assert sitk.ReadImage(str(labelmap)).GetMetaData("descrip") == NOT_CLINICAL_ASCII
