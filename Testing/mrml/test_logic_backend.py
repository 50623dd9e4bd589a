"""The CPU backend a run used (issue #13) through the Slicer logic: the ``backend=`` keyword and the segmentation's
attribute the panel reads."""

from conftest import blob_volume
from mrml_helpers import add_volume
from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic


def test_backend_keyword_and_attribute(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 26, 14)))
    logic = UNetSigmoidSegLogic(scene)
    model = model_file(out_channels=2)
    seg = logic.segment(
        vol, model, activation="sigmoid", multiLabel=True, device="cpu", backend="onednn", roiSize=[16, 16, 16]
    )
    ran = seg.GetAttribute("UNetSigmoidSeg.Backend")  # what ran, why, and what was checked against PyTorch
    assert ran.startswith("onednn (asked for; checked against PyTorch on ") and "tolerance" in ran, ran
    reference = logic.segment(
        vol, model, activation="sigmoid", multiLabel=True, device="cpu", backend="torch", roiSize=[16, 16, 16]
    )
    assert reference.GetAttribute("UNetSigmoidSeg.Backend") == "torch (asked for)"
    got, want = logic.statistics(seg), logic.statistics(reference)
    assert [s["voxels"] for s in want] != [0, 0]
    for a, b in zip(got, want):  # the same segments (tiny UNet: a voxel or two may sit on the threshold)
        assert abs(a["voxels"] - b["voxels"]) <= max(2, b["voxels"] // 1000)
