"""An unexpected exception is exit 1 and says it is a bug and where its log is (never exit 2, never a bare
traceback). The fault comes from outside the product: the worker's test hook environment variable."""

import torch
from hostile import cli, guard, volume_file  # noqa: F401

from conftest import tiny_unet, worker_fault_env


def test_unexpected_exception_is_exit_1_naming_the_log(tmp_path, guard):  # noqa: F811
    model = tmp_path / "model.pt"
    torch.save(tiny_unet().state_dict(), model)
    image = volume_file(tmp_path / "ct.nii.gz")
    guard.protect(model, image)
    args = ["segment", image, "--model", str(model), "-o", str(tmp_path / "o.seg.nrrd"), "--worker"]
    run = cli(args, tmp_path, env=worker_fault_env("raise@inference"))
    assert run.returncode == 1, run.stderr[-2000:]
    assert "This is a bug in UNetSigmoidSeg, not a problem with your files" in run.stderr
    logs = sorted((tmp_path / "logs").glob("error-*.log"))
    assert len(logs) == 1 and f"The full traceback is in {logs[0]}" in run.stderr
    assert "Traceback (most recent call last)" in logs[0].read_text()
    last = run.stderr.strip().splitlines()[-2:]  # the worker's own log lines (its traceback) come before
    assert last[0].startswith("error: unexpected WorkerInternalError") and "please report it" in last[1]
    assert not (tmp_path / "o.seg.nrrd").exists()
