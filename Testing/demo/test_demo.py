"""The shipped demo: bundle, sample data, ``unetsigmoidseg demo`` and the training script.

Real torch / MONAI throughout (no fakes). Runtime on one CPU core: about 30–40 s.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "UNetSigmoidSeg"))

from UNetSigmoidSegLib import cli  # noqa: E402
from UNetSigmoidSegLib.engine.loading.model import load_model  # noqa: E402

BUNDLE = os.path.join(REPO, "Resources", "Models", "BrainT1UNet")
TRAIN = os.path.join(REPO, "Resources", "Training", "train_brain_unet.py")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run ``unetsigmoidseg demo`` once: (exit code, stdout, output folder)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "results"  # not existing yet: the demo creates it
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["demo", "--output-dir", str(out), "--quiet"])
    return rc, buf.getvalue(), out


def test_demo_writes_three_files_and_reaches_dice_090(demo_run):
    rc, stdout, out = demo_run
    assert rc == 0, stdout
    for name in ("T1_head.seg.nrrd", "T1_head_probabilities.nrrd", "T1_head_overview.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name
    assert (out / "T1_head_overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    match = re.search(r"Dice vs reference brain mask: ([0-9.]+)", stdout)
    assert match, stdout
    assert float(match.group(1)) >= 0.90, stdout
    volume = re.search(r"brain volume: ([0-9.]+) mL \(reference ([0-9.]+) mL\)", stdout)
    assert volume and abs(float(volume.group(1)) - float(volume.group(2))) < 0.15 * float(volume.group(2)), stdout
    assert "3D Slicer" in stdout
    assert "note:" not in stdout, stdout  # a trained model, run right: no plausibility warning (no false alarm)


def test_demo_picture_carries_the_training_image_caveat_in_its_caption(demo_run):
    from PIL import Image

    _, stdout, out = demo_run
    with Image.open(out / "T1_head_overview.png") as png:
        caption = png.text["Description"]  # the picture's title, also stored as text in the PNG
    printed = float(re.search(r"Dice vs reference brain mask: ([0-9.]+)", stdout).group(1))
    shown = re.search(r"Dice ([0-9.]+) against the reference brain mask", caption)
    assert shown and abs(float(shown.group(1)) - printed) <= 0.0006, caption  # 3 decimals vs the printed 4
    assert "the demo model's own training image" in caption and "not a measure of accuracy" in caption
    assert "Research use — not for clinical use." in caption


def test_demo_segmentation_file_is_a_brain_segment_on_the_input_grid(demo_run):
    import numpy as np
    import slicerio

    from UNetSigmoidSegLib.engine.files.volume import read_volume

    _, _, out = demo_run
    seg = slicerio.read_segmentation(str(out / "T1_head.seg.nrrd"))
    assert [s["name"] for s in seg["segments"]] == ["brain"]
    image = read_volume(os.path.join(REPO, "Resources", "Data", "T1_head.nii.gz"))
    assert tuple(seg["voxels"].shape[-3:]) == image.spatial_shape
    prob = read_volume(str(out / "T1_head_probabilities.nrrd"))
    assert prob.spatial_shape == image.spatial_shape
    assert np.allclose(prob.affine, image.affine, atol=1e-4)
    assert 0.0 <= float(prob.array.min()) and float(prob.array.max()) <= 1.0


def test_shipped_bundle_loads_untrusted_as_one_sigmoid_brain_channel():
    model = load_model(BUNDLE, trust_bundle=False)
    info = model.info
    assert info.format == "bundle"
    assert (info.in_channels, info.out_channels) == (1, 1)
    assert info.activation == "sigmoid" and info.activation_source == "bundle postprocessing"
    assert info.labels == ["brain"]
    assert info.threshold == 0.5
    assert model.bundle_preprocessing is not None
    assert os.path.getsize(os.path.join(BUNDLE, "models", "model.pt")) < 10 * 1024 * 1024


def test_demo_outside_a_source_checkout_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNETSIGMOIDSEG_RESOURCES", str(tmp_path / "nowhere"))
    rc = cli.main(["demo", "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "source checkout" in err
    assert not (tmp_path / "out").exists()


def test_training_script_smoke_run_writes_a_loadable_bundle(tmp_path):
    import torch

    out = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, TRAIN, "--steps", "3", "--output", str(out), "--eval", "none"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    weights = out / "models" / "model.pt"
    assert weights.is_file()
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    shipped = torch.load(os.path.join(BUNDLE, "models", "model.pt"), map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in shipped.items()}
    model = load_model(str(out), trust_bundle=False)
    assert (model.info.in_channels, model.info.out_channels, model.info.labels) == (1, 1, ["brain"])
    assert (out / "docs" / "training_log.json").is_file()
