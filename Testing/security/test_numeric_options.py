"""Every numeric option of ``segment`` with NaN, infinities, negatives and out-of-range values: exit 2 with one
paragraph naming the option, before anything is read or written. A grid that would not fit in memory after
resampling is refused before torch is asked for it."""

import pytest
import torch
from hostile import assert_user_error, guard, volume_file  # noqa: F401

from conftest import tiny_unet
from UNetSigmoidSegLib.cli import main

BAD = [
    (["--threshold", "nan"], r"Threshold nan is not a finite number"),
    (["--threshold", "inf"], r"Threshold inf is not a finite number"),
    (["--threshold", "-0.1"], r"Threshold -0\.1 is outside \[0, 1\]"),
    (["--threshold", "0.5", "1.5"], r"Threshold 1\.5 is outside"),
    (["--overlap", "nan"], r"Overlap nan is not a finite number"),
    (["--overlap=-inf"], r"Overlap -inf is not a finite number"),
    (["--overlap", "-0.1"], r"Overlap -0\.1 is outside"),
    (["--overlap", "0.99"], r"Overlap 0\.99 is outside \[0, 0\.95\]"),
    (["--sw-batch-size", "-1"], r"Sw batch size -1 is outside \[1, 64\]"),
    (["--sw-batch-size", "0"], r"Sw batch size 0 is outside"),
    (["--sw-batch-size", "100000"], r"Sw batch size 100000 is outside"),
    (["--roi-size", "0"], r"Roi size 0 is outside \[1, 4096\]"),
    (["--roi-size", "-3", "96", "96"], r"Roi size -3 is outside"),
    (["--roi-size", "96", "96"], r"Roi size \[96, 96\] .*is not one per axis|Invalid roi size"),
    (["--spacing", "nan"], r"Spacing nan is not a finite number"),
    (["--spacing", "inf", "1", "1"], r"Spacing inf is not a finite number"),
    (["--spacing", "-1"], r"Spacing -1 is outside"),
    (["--spacing", "0"], r"Spacing 0 is outside"),
    (["--ct-window", "nan", "240", "--normalization", "ct"], r"Ct window nan is not a finite number"),
    (["--ct-window", "-160", "inf", "--normalization", "ct"], r"Ct window inf is not a finite number"),
    (["--ct-window", "240", "-160", "--normalization", "ct"], r"low must be below high"),
    (["--min-island-mm3", "nan"], r"Min island mm3 nan is not a finite number"),
    (["--min-island-mm3", "inf"], r"Min island mm3 inf is not a finite number"),
    (["--min-island-mm3", "-5"], r"Min island mm3 -5 is outside"),
    (["--strides", "0"], r"Strides 0 is outside \[1, 16\]"),
    (["--strides", "-2", "2"], r"Strides -2 is outside"),
    (["--strides", "2", "99"], r"Strides 99 is outside"),
]


@pytest.fixture
def case(tmp_path, guard):  # noqa: F811
    image = volume_file(tmp_path / "ct.nii.gz")
    model = tmp_path / "model.pt"
    torch.save(tiny_unet().state_dict(), model)
    guard.protect(image, model)
    return ["segment", image, "--model", str(model), "-o", str(tmp_path / "out.seg.nrrd"), "--device", "cpu"]


@pytest.mark.parametrize("args,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_number_is_exit_2_with_one_paragraph(args, expect, case, tmp_path, capsys):
    rc = main(case + args)
    assert_user_error(rc, capsys.readouterr().err, expect)
    assert not (tmp_path / "out.seg.nrrd").exists()


@pytest.mark.parametrize("flag", ["--sw-batch-size", "--roi-size", "--strides"])
def test_whole_number_options_refuse_nan_at_parsing(flag, case, capsys):
    rc = main(case + [flag, "nan"])
    err = capsys.readouterr().err
    assert rc == 2 and "invalid int value: 'nan'" in err and "fix: see" in err and "Traceback" not in err


def test_tiny_spacing_is_refused_before_resampling(case, capsys):
    """--spacing 0.02 on a 24×20×12 volume would resample to ~2·10⁹ voxels: refused with the grid it would make."""
    rc = main(case + ["--spacing", "0.02"])
    err = assert_user_error(rc, capsys.readouterr().err, r"needs about [\d.]+ GiB of memory to segment; .* is free")
    assert "after preprocessing" in err and "coarser --spacing" in err
