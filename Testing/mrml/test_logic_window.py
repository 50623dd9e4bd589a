"""The window a run used, in the Slicer logic's statistics, on the segmentation node and in the panel's status line
(issue #12); a 2-D network through the logic slides along the slice axis asked for."""

import torch

from conftest import blob_volume
from mrml_helpers import add_volume
from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
from UNetSigmoidSegLib.widget import rules


def test_statistics_attribute_and_status_line_show_the_window(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 26, 14)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(
        vol,
        model_file(out_channels=2),
        activation="sigmoid",
        multiLabel=True,
        device="cpu",
        roiSize=[40, 40, 18],
        overlap=0.5,
    )
    used = "roi 40×40×20 (asked 40×40×18), overlap 0.5, batch 1, gaussian"  # the UNet needs multiples of 4
    assert [s["window"] for s in logic.statistics(seg)] == [used, used]
    assert seg.GetAttribute("UNetSigmoidSeg.Window") == used
    stats = logic.statistics(seg)
    line = rules.run_summary(
        stats, 2.0, seg.GetAttribute("UNetSigmoidSeg.Device"), seg.GetAttribute("UNetSigmoidSeg.Window")
    )
    assert line.startswith("Done in 2.0 s on cpu (") and f" with {used}: Segment_1 " in line


def test_2d_network_through_the_logic(scene, tmp_path):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(2, 1, 1, (4, 8, 16), (2, 2), num_res_units=1).eval()
    torch.save(net.state_dict(), tmp_path / "m2d.pt")
    vol = add_volume(scene, blob_volume((30, 26, 14)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, str(tmp_path / "m2d.pt"), device="cpu", sliceAxis=0, roiSize=[32, 16])
    assert logic.statistics(seg)[0]["window"] == "2-D slices along i, roi 32×16, overlap 0.25, batch 1, gaussian"
    assert logic.statistics(seg)[0]["voxels"] > 0
