"""An input the user may not read is a clear exit 2 naming it — a file without read permission, and one inside a
folder the user may not enter — never "unexpected PermissionError" (exit 1). Real permissions: as root (which reads
everything) the CLI runs as the unprivileged ``nobody`` through ``setpriv``; otherwise as the current user."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch

from conftest import REPO, shared_data, tiny_unet


@pytest.fixture
def public_dir():
    """A folder every user may enter and write (like /tmp itself), removed afterwards."""
    folder = tempfile.mkdtemp(prefix="unetseg-perm-")
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_other_user(argv, home):
    env = dict(os.environ, HOME=home, PYTHONPATH=str(REPO / "UNetSigmoidSeg"), XDG_CACHE_HOME=home)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.fail("running as root needs setpriv (util-linux) to test permissions as another user")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    cmd = prefix + [sys.executable, "-m", "UNetSigmoidSegLib.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=home)


def test_unreadable_input_file_and_unenterable_folder_are_exit_2(public_dir):
    model = os.path.join(public_dir, "tiny.pt")
    torch.save(tiny_unet().state_dict(), model)
    os.chmod(model, 0o644)
    private = os.path.join(public_dir, "private.nii.gz")
    shutil.copy(shared_data("totalsegmentator", "example_ct_sm.nii.gz"), private)
    os.chmod(private, 0o600 if os.geteuid() == 0 else 0o000)  # root's own file: nobody may not read it
    hidden_dir = os.path.join(public_dir, "hidden")
    os.mkdir(hidden_dir, 0o700 if os.geteuid() == 0 else 0o000)
    cases = {private: "Cannot read", os.path.join(hidden_dir, "ct.nii.gz"): "Cannot reach"}
    for path, said in cases.items():
        out = os.path.join(public_dir, "out.nii.gz")
        done = _as_other_user(["segment", path, "--model", model, "-o", out, "--device", "cpu", "-q"], public_dir)
        assert done.returncode == 2, done.stderr[-2000:]
        assert said in done.stderr and "permission denied" in done.stderr and "chmod" in done.stderr
        assert "unexpected" not in done.stderr and not os.path.exists(out)
    os.chmod(hidden_dir, 0o700)
