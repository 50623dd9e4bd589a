"""Ctrl-C, SIGTERM and a closed terminal (SIGHUP) in the middle of a run, with and without ``--worker``: the
command exits 128 + the signal number saying so, writes nothing partial, and leaves no temp folder, no worker
job file (``input.npy``) and no worker process behind."""

import glob
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch
from hostile import REPO, guard  # noqa: F401

from conftest import blob_volume, tiny_unet, write_volume


def _start(args, tmp_path):
    env = dict(
        os.environ,
        TMPDIR=str(tmp_path / "tmp"),
        UNETSEG_LOG_DIR=str(tmp_path / "logs"),
        PYTHONPATH=os.pathsep.join([str(REPO / "UNetSigmoidSeg"), os.environ["PYTHONPATH"]]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(tmp_path),
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    chunks = []
    threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), b"")), daemon=True).start()
    return proc, chunks


def _wait_for(condition, what, timeout=180.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "mode,signame",
    [
        ("in-process", "SIGTERM"),
        ("in-process", "SIGHUP"),
        ("in-process", "SIGINT"),
        ("in-process-group", "SIGINT"),  # Ctrl-C in a terminal: the whole process group gets it
        ("openvino-group", "SIGINT"),  # the same on the OpenVINO backend (whose telemetry once caught it)
        ("worker", "SIGTERM"),
        ("worker", "SIGHUP"),
        ("worker", "SIGINT"),
    ],
)
def test_signal_during_inference_leaves_nothing_behind(mode, signame, tmp_path, guard):  # noqa: F811
    image = write_volume(tmp_path / "ct.nii.gz", blob_volume((48, 48, 40)))
    model = str(tmp_path / "model.pt")
    torch.save(tiny_unet().state_dict(), model)
    guard.protect(image, model)
    out = tmp_path / "out.seg.nrrd"
    args = [
        "segment",
        image,
        "--model",
        model,
        "-o",
        str(out),
        "--roi-size",
        "8",
        "--overlap",
        "0.9",
        "--device",
        "cpu",
    ]
    extra = {"worker": ["--worker"], "openvino-group": ["--backend", "openvino"]}.get(mode, [])
    proc, chunks = _start(args + extra, tmp_path)
    text = lambda: b"".join(chunks).decode("utf-8", "replace")  # noqa: E731
    workers = []
    try:
        _wait_for(lambda: "inference" in text() or proc.poll() is not None, "inference to start")
        assert proc.poll() is None, text()
        if mode == "worker":
            _wait_for(lambda: glob.glob(str(tmp_path / "tmp" / "unetseg-worker-*" / "job-*" / "input.npy")), "job")
            workers = psutil.Process(proc.pid).children(recursive=True)
            assert workers, "no worker process found"
        time.sleep(0.5)
        if mode.endswith("-group"):
            os.killpg(proc.pid, getattr(signal, signame))
        else:
            proc.send_signal(getattr(signal, signame))
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = text()
    assert rc == 128 + getattr(signal, signame), err[-2000:]
    assert "Traceback" not in err and f"stopped by {signame}" in err and "temporary files were removed" in err
    assert not out.exists() and not glob.glob(str(tmp_path / ".*partial*"))
    for worker in workers:
        assert not _alive(worker), f"worker {worker.pid} left running"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
