"""``unetsigmoidseg segment --worker``: the same outputs as in-process, one warm worker for a batch."""

import json

import numpy as np
import SimpleITK as sitk
import torch

from conftest import blob_volume, tiny_unet, write_volume
from UNetSigmoidSegLib.cli import main


def test_worker_batch_reuses_one_warm_worker_and_matches_in_process(tmp_path, capsys):
    model = str(tmp_path / "unet.pt")
    torch.save(tiny_unet(out_channels=2, seed=3).state_dict(), model)
    inputs = tmp_path / "cases"
    inputs.mkdir()
    for i, shape in enumerate([(40, 36, 24), (32, 28, 20)]):
        write_volume(inputs / f"case{i}.nii.gz", blob_volume(shape, seed=i))
    outputs = {}
    for mode in ("worker", "in-process"):
        out = tmp_path / mode
        out.mkdir()
        argv = [
            "segment",
            str(inputs),
            "--model",
            model,
            "--output",
            str(out),
            "--roi-size",
            "16",
            "--device",
            "cpu",
            "--activation",
            "sigmoid",
            "--multi-label",
            "--threshold",
            "0.4",
            "--json",
            "--quiet",
        ]
        assert main(argv + (["--worker"] if mode == "worker" else [])) == 0
        outputs[mode] = (out, json.loads(capsys.readouterr().out))
    (out_w, summary_w), (out_p, summary_p) = outputs["worker"], outputs["in-process"]
    workers = [case["worker"] for case in summary_w["cases"]]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 1
    assert [w["cache_hit"] for w in workers] == [True, True] and {w["load_count"] for w in workers} == {1}
    assert all("worker" not in case for case in summary_p["cases"])
    assert summary_w["model"] == summary_p["model"]
    for case_w, case_p in zip(summary_w["cases"], summary_p["cases"]):
        assert case_w["segments"] == case_p["segments"] and case_w["thresholds"] == case_p["thresholds"]
        for name in ("case0.seg.nrrd", "case1.seg.nrrd"):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(out_w / name)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(out_p / name)))
            assert np.array_equal(a, b)


def test_worker_python_that_does_not_exist_is_a_user_error(tmp_path, capsys):
    model = str(tmp_path / "unet.pt")
    torch.save(tiny_unet().state_dict(), model)
    volume = write_volume(tmp_path / "v.nii.gz", blob_volume((24, 20, 16)))
    code = main(
        [
            "segment",
            volume,
            "--model",
            model,
            "--output",
            str(tmp_path / "v.seg.nrrd"),
            "--worker",
            "--worker-python",
            str(tmp_path / "no-python"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Python interpreter not found" in err and "fix:" in err
