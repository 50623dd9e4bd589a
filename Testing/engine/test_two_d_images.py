"""A 2-D image (a PNG frame, as endoscopy and pathology bundles take) runs through a 2-D network as a one-slice
volume and gives plain MONAI's answer on the 2-D image; a 3-D network refuses it before the run."""

import numpy as np
import SimpleITK as sitk
import torch

from conftest import blob_volume, tiny_unet
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.engine.files.volume import read_volume


def _png(path):
    rgb = (np.stack([blob_volume((60, 48, 1), seed=s)[..., 0] for s in range(3)], -1) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb.transpose(1, 0, 2), isVector=True), str(path))  # (J, I, RGB)
    return rgb  # (I, J, RGB)


def test_png_through_a_2d_network_equals_monai_on_the_2d_image(tmp_path):
    from monai.inferers import sliding_window_inference

    rgb = _png(tmp_path / "frame.png")
    volume = read_volume(str(tmp_path / "frame.png"))
    assert volume.array.shape == (3, 60, 48, 1)
    np.testing.assert_array_equal(volume.array[..., 0], rgb.transpose(2, 0, 1))
    from monai.networks.nets import UNet

    torch.manual_seed(4)
    net = UNet(2, 3, 1, (4, 8, 16), (2, 2), num_res_units=1).eval()
    torch.save(net.state_dict(), tmp_path / "unet2d.pt")
    out = tmp_path / "frame_seg.nii.gz"
    argv = ["segment", str(tmp_path / "frame.png"), "--model", str(tmp_path / "unet2d.pt"), "-q", "-o", str(out)]
    assert main(argv + ["--normalization", "none"]) == 0
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[0].T > 0  # (I, J)
    image = torch.from_numpy(volume.array[..., 0].astype(np.float32))[None]
    with torch.inference_mode():
        logits = sliding_window_inference(image, [96, 96], 1, net, 0.25, mode="gaussian")
    expected = (torch.sigmoid(logits)[0, 0] >= 0.5).numpy()
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(got, expected)


def test_a_3d_network_refuses_a_2d_image_before_the_run(tmp_path, capsys):
    _png(tmp_path / "frame.png")
    torch.save(tiny_unet(in_channels=3).state_dict(), tmp_path / "unet3d.pt")
    argv = [
        "segment",
        str(tmp_path / "frame.png"),
        "--model",
        str(tmp_path / "unet3d.pt"),
        "-o",
        str(tmp_path / "x.nii.gz"),
    ]
    assert main(argv + ["--normalization", "none"]) == 2
    assert "a single slice is a 2-D image" in capsys.readouterr().err
