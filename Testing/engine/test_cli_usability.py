"""The command line as people expect it: shell completion from a real library (argcomplete) and ``--verbose``."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from UNetSigmoidSegLib.cli import main


def _complete(line, tmp_path):
    out = tmp_path / "completions.txt"
    env = dict(
        os.environ,
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_IFS="\n",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        _ARGCOMPLETE_STDOUT_FILENAME=str(out),
    )
    result = subprocess.run(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli"], env=env, cwd=REPO / "UNetSigmoidSeg", timeout=120
    )
    assert result.returncode == 0
    return sorted(c.strip() for c in out.read_text().split("\n") if c.strip())


@pytest.mark.parametrize(
    "line, expected",
    [
        ("unetsigmoidseg th", ["threshold"]),
        ("unetsigmoidseg segment --activation ", ["auto", "none", "sigmoid", "softmax"]),
        ("unetsigmoidseg segment --norm", ["--normalization"]),
        ("unetsigmoidseg segment --normalization z", ["zscore", "zscore-nonzero"]),
    ],
)
def test_shell_completion_offers_commands_flags_and_choices(tmp_path, line, expected):
    assert _complete(line, tmp_path) == expected


def test_verbose_adds_the_technical_detail_under_the_result_line(tmp_path, model_file, volume_file, capsys):
    vol, model = volume_file("ct.nii.gz"), model_file(out_channels=1)
    assert main(["segment", vol, "--model", model, "-q", "-o", str(tmp_path / "a.seg.nrrd")]) == 0
    plain = capsys.readouterr().out.strip().splitlines()
    assert len(plain) == 1 and "device:" not in plain[0]
    assert main(["segment", vol, "--model", model, "-q", "-v", "-o", str(tmp_path / "b.seg.nrrd")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(vol) and len(lines) == 6
    assert lines[1].startswith("  device: cpu (") and lines[2].startswith("  backend: torch")
    assert lines[3].startswith("  window: roi ") and lines[4] == "  activation: sigmoid; thresholds: 0.5"
    assert lines[5].startswith("  seconds: ") and " inference " in lines[5]


def test_inspect_prints_plain_values_not_python_reprs(capsys):
    assert main(["inspect", str(REPO / "Resources" / "Models" / "BrainT1UNet")]) == 0
    out = capsys.readouterr().out
    assert "roi size         96×96×96" in out and "threshold        0.5" in out
    assert "channels 8 16 32 64, strides 2 2 2" in out
    assert not any(c in out for c in "{}[]'") and "None" not in out


def test_settings_that_replace_the_models_are_said():
    from UNetSigmoidSegLib.contract.model import ModelInfo
    from UNetSigmoidSegLib.contract.options import SegmentOptions
    from UNetSigmoidSegLib.engine.running.pipeline import overridden

    info = ModelInfo(
        "m", "bundle", "UNet", 1, 2, "softmax", "bundle postprocessing", roi_size=[96, 96, 96], overlap=0.25
    )
    said = overridden(SegmentOptions(roi_size=[64], overlap=0.5, blend_mode="constant"), info)
    assert said == [
        "roi [64] (asked) replaces the model's [96, 96, 96]",
        "overlap 0.5 (asked) replaces the model's 0.25",
    ]  # the blend mode: the model brings none
    assert overridden(SegmentOptions(roi_size=[96]), info) == [] and overridden(SegmentOptions(), info) == []
    anisotropic = ModelInfo("m", "bundle", "UNet", 1, 2, "softmax", "bundle postprocessing", roi_size=[96, 64, 96])
    assert overridden(SegmentOptions(roi_size=[64, 96, 96]), anisotropic) == [
        "roi [64, 96, 96] (asked) replaces the model's [96, 64, 96]"  # the same sizes on other axes: another window
    ]
