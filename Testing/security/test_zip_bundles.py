"""Bundle ``.zip`` files built to hurt: bombs, links, devices, escaping paths, lies in the headers, and signals
arriving mid-extraction. Nothing is extracted from a refused archive, and nothing is ever left in the temp
folder."""

import os
import signal
import stat
import subprocess
import sys
import zipfile

import pytest
from hostile import REPO, assert_user_error, cli, guard, make_bundle  # noqa: F401

from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.engine.loading import bundlezip
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.errors import ModelError


def _zip(path, folder, extra=(), compression=zipfile.ZIP_DEFLATED):
    """Zip a bundle ``folder`` (as ``b/…``) plus ``extra`` entries ``(ZipInfo or name, bytes)``."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                full = os.path.join(root, name)
                zf.write(full, "b/" + os.path.relpath(full, folder))
        for info, data in extra:
            zf.writestr(info, data)
    return str(path)


def _entry(name, mode):
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _mark_encrypted(archive, name):
    """Set the "encrypted" flag of entry ``name`` in the central directory (zipfile cannot write one)."""
    data = bytearray(open(archive, "rb").read())
    at = data.index(b"PK\x01\x02")
    while True:
        size = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + size] == name.encode():
            data[at + 8] |= 0x1
            break
        at = data.index(b"PK\x01\x02", at + 4)
    open(archive, "wb").write(bytes(data))


ZIP_CASES = {
    "zip bomb (one entry, 1000×)": (
        lambda t: [("b/configs/pad.json", b"\0" * (200 * 2**20))],
        r"expands .*× .*zip bomb",
    ),
    "many small bombs (archive 1000×)": (
        lambda t: [(f"b/docs/pad{i}.txt", b"\0" * 2**20) for i in range(300)],
        r"it expands .*× \(at most 100×\): a zip bomb",
    ),
    "too many entries": (lambda t: [(f"b/docs/{i}.txt", b"") for i in range(2001)], r"entries \(at most 2,000\)"),
    "symbolic link to the user's files": (
        lambda t: [(_entry("b/models/model.ts", stat.S_IFLNK | 0o777), str(t / "ct.nii.gz").encode())],
        r"'b/models/model\.ts' is a symbolic link",
    ),
    "character device": (lambda t: [(_entry("b/configs/tty", stat.S_IFCHR | 0o666), b"")], r"is a character device"),
    "named pipe (a read would block)": (
        lambda t: [(_entry("b/configs/fifo", stat.S_IFIFO | 0o666), b"")],
        r"is a named pipe",
    ),
    "absolute path": (lambda t: [(str(t / "markers" / "abs.txt"), b"x")], r"has an unsafe path"),
    "path escaping with ..": (lambda t: [("b/configs/../../../escape.txt", b"x")], r"has an unsafe path"),
    "duplicate entry replacing the config": (
        lambda t: [("b/configs/inference.json", b'{"network_def": {"_target_": "run_cmd"}}')],
        r"'b/configs/inference\.json' appears twice",
    ),
    "encrypted entry": (lambda t: [("b/docs/secret.txt", b"x")], r"'b/docs/secret\.txt' is encrypted"),
}


@pytest.mark.parametrize("name", list(ZIP_CASES))
def test_hostile_zip_is_refused_before_extraction(name, tmp_path, guard, capsys):  # noqa: F811
    build, expect = ZIP_CASES[name]
    folder = make_bundle(tmp_path / "bundle")
    (tmp_path / "ct.nii.gz").write_bytes(b"the user's image")
    archive = _zip(tmp_path / "bundle.zip", folder, build(tmp_path))
    if name == "encrypted entry":
        _mark_encrypted(archive, "b/docs/secret.txt")
    guard.protect(archive, tmp_path / "ct.nii.gz")
    rc = main(["inspect", archive])
    assert_user_error(rc, capsys.readouterr().err, expect + r".*Nothing was extracted")
    assert not (tmp_path / "escape.txt").exists()


def test_header_lying_about_the_size_is_corrupt(tmp_path, guard):  # noqa: F811
    folder = make_bundle(tmp_path / "bundle")
    archive = _zip(tmp_path / "bundle.zip", folder, compression=zipfile.ZIP_STORED)
    data = bytearray(open(archive, "rb").read())
    at = data.index(b'"network_def"')
    data[at + 1 : at + 4] = b"XYZ"  # the bytes change, the CRC in the header does not
    open(archive, "wb").write(bytes(data))
    with pytest.raises(ModelError, match=r"corrupt or uses an unsupported feature"):
        load_model(archive)


def test_untrusted_extraction_takes_only_configs_and_weights(tmp_path, guard, monkeypatch):  # noqa: F811
    folder = make_bundle(tmp_path / "bundle")
    archive = _zip(tmp_path / "b.zip", folder, [("b/scripts/__init__.py", b"import os"), ("b/docs/x.md", b"#")])
    copied = []
    real = bundlezip._copy
    monkeypatch.setattr(
        bundlezip, "_copy", lambda zf, info, target: (copied.append(info.filename), real(zf, info, target))
    )
    assert load_model(archive).info.path == archive
    assert sorted(copied) == ["b/configs/inference.json", "b/configs/metadata.json", "b/models/model.pt"]


SIGNAL_DURING_EXTRACTION = """
import os, signal, sys
from UNetSigmoidSegLib.engine.loading import bundlezip
from UNetSigmoidSegLib.cli import main
real = bundlezip._copy
def copy_then_signal(zf, info, target):
    real(zf, info, target)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # the signal arrives while the bundle is half extracted
bundlezip._copy = copy_then_signal
sys.exit(main(["inspect", sys.argv[2]]))
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_during_extraction_leaves_nothing(signame, tmp_path, guard):  # noqa: F811
    archive = _zip(tmp_path / "b.zip", make_bundle(tmp_path / "bundle"))
    guard.protect(archive)
    path = os.pathsep.join([str(REPO / "UNetSigmoidSeg"), os.environ["PYTHONPATH"]])
    env = dict(os.environ, TMPDIR=str(guard.temp), PYTHONPATH=path)
    run = subprocess.run(
        [sys.executable, "-c", SIGNAL_DURING_EXTRACTION, signame, archive],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 128 + getattr(signal, signame), run.stderr
    assert "Traceback" not in run.stderr and "temporary files were removed" in run.stderr


def test_valid_zip_bundle_through_the_command_line_leaves_nothing(tmp_path, guard):  # noqa: F811
    archive = _zip(tmp_path / "b.zip", make_bundle(tmp_path / "bundle"))
    guard.protect(archive)
    run = cli(["inspect", archive], tmp_path)
    assert run.returncode == 0 and "bundle: UNet" in run.stdout, run.stderr
