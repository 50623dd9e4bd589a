"""A new user's first steps, with default flags and wrong guesses: a tutorial checkpoint on a raw CT, an output that
exists, a folder that does not, a wrong label count, softmax on one channel, ``-q``, ``--version``, a server asked for
a GPU it lacks. Each gives a clear message before the run or a warning after it — never a silent result."""

import json
import os
import re

import numpy as np
import pytest
import torch
from fidelity_helpers import random_unet
from test_cli import _run_cli as _cli

from conftest import blob_volume, shared_data, tiny_unet, write_volume
from UNetSigmoidSegLib import __version__
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running import plausibility
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import OptionError

CT = shared_data("totalsegmentator", "example_ct_sm.nii.gz")  # real CT in Hounsfield units


@pytest.fixture
def tutorial_checkpoint(tmp_path):
    """Saved as MONAI's spleen tutorial saves it: ``torch.save(model.state_dict(), ...)``, nothing else (smaller
    channels than the tutorial's 16…256 to keep the test quick; the same layout and norm)."""
    path = tmp_path / "best_metric_model.pth"
    # random weights: seed 1's foreground is 70 % of this CT, a share no plausibility check objects to (seed 0's
    # covers 99.8 % of it and is warned about, as the mask check should)
    net = random_unet(channels=(8, 16, 32, 64), res_units=2, out_channels=2, seed=1)
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_unet(seed=3).state_dict(), path)
    return str(path)


def _stages(calls):
    return {stage for stage, _fraction, _message in calls}


def test_tutorial_checkpoint_on_raw_ct_without_normalization_is_refused_before_the_run(
    tmp_path, tutorial_checkpoint, capsys
):
    out = tmp_path / "spleen.seg.nrrd"
    rc = main(["segment", str(CT), "--model", tutorial_checkpoint, "-o", str(out), "--roi-size", "64", "64", "32"])
    err = " ".join(capsys.readouterr().err.split())  # as one line: the message is wrapped for the terminal
    assert rc == 2 and not out.exists()
    assert "does not record how its input was normalised" in err
    assert re.search(r"raw intensities \(-1\d{3} to \d{3,4}\)", err)  # the CT's Hounsfield units
    assert '"normalization": "ct", "ct_window": [-57, 164]' in err and "--normalization" in err  # the JSON, the flag
    # the same through the Python API: an OptionError before any window runs
    calls = []
    with pytest.raises(OptionError, match="raw intensities"):
        segment(
            read_volume(str(CT)),
            load_model(ModelSpec(tutorial_checkpoint)),
            SegmentOptions(device="cpu"),
            progress=lambda *a: calls.append(a),
        )
    assert "inference" not in _stages(calls)


def test_the_right_flags_run_quietly_and_a_recorded_normalization_is_not_asked_again(tmp_path, tutorial_checkpoint):
    flags = ["--normalization", "ct", "--ct-window", "-57", "164", "--roi-size", "64", "64", "32", "--json", "-q"]
    run = _cli("segment", str(CT), "--model", tutorial_checkpoint, "-o", str(tmp_path / "a.seg.nrrd"), *flags)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["cases"][0]["warnings"] == [] and "warning" not in run.stderr
    sidecar = os.path.splitext(tutorial_checkpoint)[0] + ".json"  # recorded once, as the refusal says
    with open(sidecar, "w") as f:
        json.dump({"normalization": "ct", "ct_window": [-57, 164]}, f)
    again = _cli(
        "segment",
        str(CT),
        "--model",
        tutorial_checkpoint,
        "-o",
        str(tmp_path / "b.seg.nrrd"),
        "--roi-size",
        "64",
        "64",
        "32",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    a, b = (json.loads(r.stdout)["cases"][0]["segments"] for r in (run, again))
    assert a == b  # the same result as with the flags


def test_a_normalised_input_runs_and_none_says_raw_on_purpose(tmp_path, model):
    vol = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)) * 100.0))  # raw-looking
    loaded = load_model(ModelSpec(model))
    with pytest.raises(OptionError):
        segment(vol, loaded, SegmentOptions(device="cpu", roi_size=[16, 16, 16]))
    result = segment(vol, loaded, SegmentOptions(device="cpu", roi_size=[16, 16, 16], normalization="none"))
    assert result.masks.shape[1:] == vol.spatial_shape  # the user said so: it runs
    calm = read_volume(write_volume(tmp_path / "n.nii.gz", blob_volume((24, 20, 16))))  # already normalised values
    assert segment(calm, loaded, SegmentOptions(device="cpu", roi_size=[16, 16, 16])).masks.any()


def test_plausibility_warnings_name_the_cause():
    saturated = torch.full((1, 8, 8, 8), 300.0)
    saturated[0, :2] = 1.0
    assert "saturated" in plausibility.output_warnings(saturated, "sigmoid")[0]
    assert plausibility.output_warnings(saturated, "none") == []  # probabilities already: not logits
    assert plausibility.output_warnings(torch.randn(2, 8, 8, 8) * 5, "softmax") == []
    full = np.ones((2, 10, 10, 10), bool)
    full[1, :5] = False
    warned = plausibility.mask_warnings(full, ["background?", "spleen"], "sigmoid", 2)
    assert len(warned) == 1 and "'background?' covers 100%" in warned[0] and "background channel" in warned[0]


@pytest.mark.parametrize(
    "labels, activation, expected",
    [
        (
            ["spleen"],
            "sigmoid",
            r"Sigmoid asked for a model with 2 output channels that does not record.*--multi-label",
        ),
        (["spleen"], "sigmoid+", r"1 label\(s\) given for 2 segment\(s\)"),
        (["a", "b", "c", "d"], "softmax", r"4 label\(s\) given for 1 segment\(s\).*channel 0 is the background"),
    ],
)
def test_label_count_and_activation_mistakes_fail_before_the_run(tmp_path, labels, activation, expected):
    path = tmp_path / "two.pt"
    torch.save(tiny_unet(out_channels=2).state_dict(), path)
    vol = read_volume(write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16))))
    calls = []
    with pytest.raises(OptionError, match=expected):
        segment(
            vol,
            load_model(ModelSpec(str(path))),
            SegmentOptions(
                device="cpu", labels=labels, activation=activation.rstrip("+"), multi_label=activation.endswith("+")
            ),
            progress=lambda *a: calls.append(a),
        )
    assert not calls  # not even preprocessing ran
    one = tmp_path / "one.pt"
    torch.save(tiny_unet().state_dict(), one)
    with pytest.raises(OptionError, match="Softmax needs at least 2 output channels"):
        segment(
            vol,
            load_model(ModelSpec(str(one))),
            SegmentOptions(device="cpu", activation="softmax"),
            progress=lambda *a: calls.append(a),
        )
    assert not calls


def test_existing_output_is_refused_untouched_unless_overwrite(tmp_path, model, volume_file, capsys):
    vol = volume_file()
    out = tmp_path / "result.seg.nrrd"
    out.write_bytes(b"the user's earlier work")
    assert main(["segment", vol, "--model", model, "-o", str(out), "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"the user's earlier work"
    assert main(["segment", vol, "--model", model, "-o", str(out), "-q", "--overwrite"]) == 0
    assert out.read_bytes() != b"the user's earlier work"


def test_output_folders_are_created_for_one_input_or_many(tmp_path, model, volume_file, monkeypatch):
    vol = volume_file("case.nii.gz")
    assert main(["segment", vol, "--model", model, "-o", str(tmp_path / "sig_out") + "/", "-q"]) == 0
    assert os.listdir(tmp_path / "sig_out") == ["case.seg.nrrd"]
    batch = [volume_file("a.nii.gz"), volume_file("b.nii.gz")]
    probs = str(tmp_path / "new" / "probs") + os.sep
    assert (
        main(["segment", *batch, "--model", model, "-o", str(tmp_path / "segs") + "/", "--probabilities", probs]) == 0
    )
    assert sorted(os.listdir(tmp_path / "segs")) == ["a.seg.nrrd", "b.seg.nrrd"]
    assert sorted(os.listdir(probs)) == ["a_probabilities.nrrd", "b_probabilities.nrrd"]
    # a batch into a file name, or a refused run: nothing created, nothing left
    assert main(["segment", *batch, "--model", model, "-o", str(tmp_path / "one.seg.nrrd")]) == 2
    assert (
        main(["segment", *batch, "--model", model, "-o", str(tmp_path / "segs2") + "/", "--activation", "softmax"]) == 2
    )
    assert not (tmp_path / "segs2").exists() and not (tmp_path / "one.seg.nrrd").exists()
    blocked = tmp_path / "a file"
    blocked.write_text("")
    assert (
        main(
            [
                "segment",
                vol,
                "--model",
                model,
                "-o",
                str(tmp_path / "made") + "/",
                "--probabilities",
                str(blocked / "probs") + "/",
            ]
        )
        == 2
    )  # a folder that cannot be made: exit 2, not a bug report
    assert not (tmp_path / "made").exists()


def test_quiet_hides_progress_not_warnings_or_the_result(tmp_path, model, volume_file):
    out = tmp_path / "labels.nii.gz"
    run = _cli("segment", volume_file(), "--model", model, "-o", str(out), "--threshold", "0.0", "-q", "--labels", "a")
    assert run.returncode == 0, run.stderr
    assert "inference" not in run.stderr and "model:" not in run.stderr  # no progress, no notes
    assert "warning: Segment 'a' covers 100% of the volume" in run.stderr  # threshold 0: everything
    assert f"→ {out}" in run.stdout and "research use" in run.stdout.lower()


def test_version_and_choices(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"unetsigmoidseg {__version__}"
    assert main(["segment", "x.nii.gz", "--model", "m.pt", "--normalization", "zscor"]) == 2
    err = capsys.readouterr().err
    assert "choose from 'none', 'zscore'" in err and "fix: see 'unetsigmoidseg segment --help'" in err
    run = _cli("segment", "--help")
    for flag in ("--overwrite", "--normalization", "--orientation", "--device", "--activation", "--quiet"):
        assert flag in run.stdout
    assert "default" in run.stdout and "not for clinical use" in _cli("--help").stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_serve_on_a_missing_device_refuses_to_start(tmp_path):
    run = _cli("serve", "--models", str(tmp_path), "--device", "cuda", "--port", "0")
    assert run.returncode == 2 and "CUDA not available" in run.stderr and "Traceback" not in run.stderr
