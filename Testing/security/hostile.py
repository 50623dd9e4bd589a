"""Building hostile inputs the way an attacker would, and the checks every security test makes afterwards.

Payloads are harmless stand-ins for real attacks: instead of deleting or stealing files they create a
*marker* file (directly, through a shell or through a spawned process) in the test's ``markers/`` folder, so
"the payload ran" is a file that exists. ``Guard`` then checks what every test must show: no marker was
written, the inputs and the model are byte-identical, and nothing is left in the (private) temp folder.
"""

import hashlib
import json
import locale
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pytest
import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "Testing"))

from conftest import TINY_UNET_DEF as UNET_DEF  # noqa: E402
from conftest import blob_volume, tiny_unet, write_volume  # noqa: E402


def digest(path: Any) -> str:
    h = hashlib.sha256()
    p = Path(path)
    for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if f.is_file():
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


class Guard:
    """Snapshots ``files`` (inputs, the model) and watches ``markers`` and the private ``temp`` folder."""

    def __init__(self, root: Path, files: Sequence[Any] = ()) -> None:
        self.markers = root / "markers"
        self.temp = root / "tmp"
        self.markers.mkdir(exist_ok=True)
        self.temp.mkdir(exist_ok=True)
        self.files = [Path(f) for f in files]
        self.before = {f: digest(f) for f in self.files}

    def protect(self, *paths: Any) -> None:
        """Snapshot more files (or folders) that must stay byte-identical."""
        for path in paths:
            self.files.append(Path(path))
            self.before[Path(path)] = digest(path)

    def marker(self, name: str = "ran") -> str:
        return str(self.markers / name)

    def check(self) -> None:
        ran = sorted(p.name for p in self.markers.iterdir())
        assert not ran, f"a payload ran: {ran}"
        for f, before in self.before.items():
            assert f.exists() and digest(f) == before, f"{f} was changed"
        left = sorted(p.name for p in self.temp.iterdir())
        assert not left, f"left in the temp folder: {left}"


@pytest.fixture
def guard(tmp_path, monkeypatch):
    """A ``Guard`` whose temp folder is this process's temp folder for the test (and the CLI's, via TMPDIR)."""
    g = Guard(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(g.temp))
    monkeypatch.setenv("TMPDIR", str(g.temp))
    monkeypatch.setenv("UNETSEG_LOG_DIR", str(tmp_path / "logs"))
    yield g
    g.check()


def make_bundle(
    root: Path,
    network_def: Any = None,
    weights: Optional[torch.nn.Module] = None,
    metadata: Optional[Dict[str, Any]] = None,
    **inference: Any,
) -> str:
    """A bundle folder: ``configs/inference.json`` (``network_def`` + ``inference`` ids), ``metadata.json`` and
    the weights of the network ``weights`` (default: a tiny UNet matching ``UNET_DEF``)."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    config = {"network_def": UNET_DEF if network_def is None else network_def}
    config.setdefault(
        "preprocessing",
        {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged", "keys": "image"}]},
    )
    config.update(inference)
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    meta = (
        metadata
        if metadata is not None
        else {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "blob"}}}}}
    )
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save((weights or tiny_unet(channels=(4, 8, 16))).state_dict(), root / "models" / "model.pt")
    return str(root)


def volume_file(path: Path, shape=(24, 20, 12)) -> str:
    return write_volume(path, blob_volume(shape))


def cli(
    args: Sequence[str],
    tmp: Path,
    timeout: float = 240,
    stdin: str = "devnull",
    env: Optional[Dict[str, str]] = None,
) -> subprocess.CompletedProcess:
    """``unetsigmoidseg ARGS`` as a real subprocess with a private temp folder. ``stdin``: "devnull" (closed) or
    "pipe" (open, never written: a prompt waiting on it hangs until the timeout, which fails the test)."""
    run_env = dict(os.environ, TMPDIR=str(tmp / "tmp"), UNETSEG_LOG_DIR=str(tmp / "logs"), **(env or {}))
    run_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "UNetSigmoidSeg")] + [p for p in [(env or {}).get("PYTHONPATH"), os.environ.get("PYTHONPATH")] if p]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli", *args],
        stdin=subprocess.DEVNULL if stdin == "devnull" else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=str(tmp),
        env=run_env,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the command hung (no exit within {timeout} s): {err[-1500:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_user_error(rc: int, err: str, pattern: str) -> str:
    """Exit 2 with one paragraph (``error:`` what is wrong, ``fix:`` what to do), no traceback, no debugger."""
    assert rc == 2, f"expected exit 2, got {rc}: {err[-2000:]}"
    assert "Traceback" not in err and "(Pdb)" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.startswith(("error:", "fix:"))]
    assert len([line for line in lines if line.startswith("error:")]) == 1 and lines[-1].startswith("fix:"), err
    assert re.search(pattern, err, re.S), f"{pattern!r} not in {err!r}"
    return err


def write_series(folder, uid, description, slices, seed):
    """A DICOM CT series written slice by slice with SimpleITK (its own UID, description, positions).

    GDCM's writer switches the process locale to "C" (ASCII): it is restored afterwards, or every later
    ``open()`` / ``subprocess`` text decoding in the test process would fail on non-ASCII text."""
    previous = locale.setlocale(locale.LC_ALL)
    try:
        _write_series(folder, uid, description, slices, seed)
    finally:
        locale.setlocale(locale.LC_ALL, previous)


def _write_series(folder, uid, description, slices, seed):
    folder.mkdir(exist_ok=True)
    volume = np.random.default_rng(seed).normal(100, 20, (slices, 24, 20)).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(slices):
        image = sitk.GetImageFromArray(volume[k])
        image.SetSpacing((0.8, 0.8))
        tags = {
            "0020|000e": uid,
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0008|0060": "CT",
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.5 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{k + 1}",
            "0028|0030": "0.8\\0.8",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{description[:2]}{k:03d}.dcm"))
        writer.Execute(image)


def zoo_bundle(tmp_path, name, weights="models/model.pt", **network_overrides):
    """The zoo bundle's configs with random weights for its network where its config loads them (the network is
    built by MONAI's own ConfigParser here: trusted test code, with ``network_overrides``; None leaves one out)."""
    import shutil

    import torch
    from monai.bundle import ConfigParser

    root = tmp_path / name
    shutil.copytree(HERE / "zoo" / name, root)
    (root / "models").mkdir()
    config = next((root / "configs").glob("inference.*"))
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(root)
    for key, value in network_overrides.items():  # None: the argument is left out
        if value is None:
            parser["network_def"] = {k: v for k, v in parser["network_def"].items() if k != key}
        else:
            parser[f"network_def#{key}"] = value
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / weights)
    return root
