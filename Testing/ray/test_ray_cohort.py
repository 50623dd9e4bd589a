"""``segment --ray``: a cohort on a real Ray cluster on this computer — a private one the command starts, and a
three-node ``ray.cluster_utils.Cluster`` for losing a node. Nothing is mocked: real Ray, torch, MONAI, files.

Each output equals the local batch's voxel for voxel; a killed actor process or a removed node re-runs only the
unfinished case; a second run skips what its records prove done; a corrupt input is one failed row; Ctrl-C ends the
whole job with nothing partial; a Python without Ray gets the install command."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from conftest import REPO, shared_data

sys.path.insert(0, str(REPO / "Testing" / "remote"))
from remote_fixtures import make_models  # noqa: E402

pytestmark = pytest.mark.slow
CT = shared_data("totalsegmentator", "example_ct_sm.nii.gz")
LONG = shared_data("totalsegmentator", "aorta_ct_cropped.nii.gz")  # seconds of windows at roi 16, overlap 0.5
FAST = ["--device", "cpu", "--backend", "torch", "--roi-size", "32", "32", "16"]
SLOW = ["--device", "cpu", "--backend", "torch", "--roi-size", "16", "--overlap", "0.5"]


def cli(*args, **popen):
    command = [sys.executable, "-m", "UNetSigmoidSegLib.cli", *map(str, args)]
    if popen:
        return subprocess.Popen(command, cwd=str(REPO / "UNetSigmoidSeg"), text=True, **popen)
    return subprocess.run(command, cwd=str(REPO / "UNetSigmoidSeg"), capture_output=True, text=True, timeout=600)


PIPES = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ray_cohort(inputs: Path, model: str, out: Path, *flags, address: str = "", **popen):
    """``segment INPUTS --model M -o OUT/ --ray [ADDRESS] FLAGS…`` with one one-thread actor, the slow window (a few
    seconds a case, so a test can act while it runs); ``popen``: start it, else run it to the end."""
    ray = ["--ray", address] if address else ["--ray"]
    return cli(
        "segment",
        inputs,
        "--model",
        model,
        "-o",
        f"{out}/",
        *ray,
        "--actors",
        "1",
        "--threads",
        "1",
        *flags,
        *SLOW,
        **popen,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_models(tmp_path_factory.mktemp("models")) / "tiny.pt")


def cohort(folder: Path, source: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        shutil.copy(source, folder / f"case{i}.nii.gz")
    return folder


def masks(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def assert_same_outputs(got: Path, want: Path, names) -> None:
    for name in names:
        a, b = masks(got / f"{name}.seg.nrrd"), masks(want / f"{name}.seg.nrrd")
        assert np.array_equal(a, b) and a.any(), name


def actor_processes():
    """The Ray worker processes running a case now (Ray titles them ``ray::EngineActor.segment_volume``)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if line.startswith("ray::EngineActor.segment_volume"):
            found.append(p)
    return found


def wait_for(condition, timeout=180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_cohort_equals_the_local_batch_skips_what_is_done_and_reports_a_corrupt_input(tmp_path, model):
    inputs = cohort(tmp_path / "in", CT, 3)
    local = cli("segment", inputs, "--model", model, "-o", f"{tmp_path / 'local'}/", "--json", "-q", *FAST)
    assert local.returncode == 0, local.stderr
    (inputs / "broken.nii.gz").write_bytes(b"not an image")  # a corrupt file in the cohort
    out = tmp_path / "ray"
    run = cli(
        "segment", inputs, "--model", model, "-o", f"{out}/", "--ray", "--json", "--verbose", "--threads", "1", *FAST
    )
    assert run.returncode == 2 and "1 of 4 case(s) failed" in run.stderr, run.stderr
    assert "cohort: 4/4 (3 done, 1 failed, 0 skipped)" in run.stderr and "cases/h" in run.stderr  # the progress line
    assert f"case1.nii.gz → {out / 'case1.seg.nrrd'} (done; body " in run.stderr  # --verbose: a line per case
    summary = json.loads(run.stdout)
    assert summary["cohort"] == {"done": 3, "failed": 1, "skipped": 0, "total": 4}
    rows = {Path(r["input"]).name: r for r in summary["cases"]}
    assert rows["broken.nii.gz"]["status"] == "failed" and "Cannot read image" in rows["broken.nii.gz"]["error"]
    assert not (out / "broken.seg.nrrd").exists()
    assert_same_outputs(out, tmp_path / "local", ["case0", "case1", "case2"])
    local_rows = {Path(r["input"]).name: r for r in json.loads(local.stdout)["cases"]}
    assert rows["case0.nii.gz"]["segments"] == local_rows["case0.nii.gz"]["segments"]  # same row, same figures
    assert rows["case0.nii.gz"]["node"] and rows["case0.nii.gz"]["timings_s"]["total_s"] > 0
    csv_lines = (out / "unetsigmoidseg-summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("input,status,segments") and len(csv_lines) == 5
    assert json.loads((out / "case0.seg.nrrd.run.json").read_text())["input_sha256"]

    # again: every finished case is skipped, its files untouched; the corrupt one fails again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("case*.seg.nrrd")}
    again = cli("segment", inputs, "--model", model, "-o", f"{out}/", "--ray", "--json", "--threads", "1", *FAST)
    assert again.returncode == 2
    assert json.loads(again.stdout)["cohort"] == {"done": 0, "failed": 1, "skipped": 3, "total": 4}
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("case*.seg.nrrd")}

    # other options: the records no longer hold, and an output is never replaced unasked
    (inputs / "broken.nii.gz").unlink()
    other = cli("segment", inputs, "--model", model, "-o", f"{out}/", "--ray", "--threshold", "0.3", *FAST)
    assert other.returncode == 2 and "exists from another run" in other.stderr, other.stderr
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("case*.seg.nrrd")}

    # an output no record explains is refused before anything runs
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "case0.seg.nrrd").write_bytes(b"the user's own file")
    refused = cli("segment", inputs, "--model", model, "-o", f"{tmp_path / 'mine'}/", "--ray", *FAST)
    assert refused.returncode == 2 and "no record says which run made it" in refused.stderr
    assert (tmp_path / "mine" / "case0.seg.nrrd").read_bytes() == b"the user's own file"


def test_a_killed_actor_reruns_only_its_case_and_outputs_equal_a_local_run(tmp_path, model):
    inputs = cohort(tmp_path / "in", LONG, 2)
    out = tmp_path / "ray"
    proc = ray_cohort(inputs, model, out, "--json", "-q", **PIPES)
    victim = wait_for(actor_processes)[0]
    time.sleep(1.0)  # mid-case
    victim.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["cohort"]["done"] == 2
    assert victim.pid not in {r["pid"] for r in summary["cases"]}  # both cases came from the restarted actor
    local = cli("segment", inputs, "--model", model, "-o", f"{tmp_path / 'local'}/", "-q", *SLOW)
    assert local.returncode == 0, local.stderr
    assert_same_outputs(out, tmp_path / "local", ["case0", "case1"])
    assert not list(out.glob(".*partial*"))


def test_ctrl_c_ends_the_cohort_and_leaves_nothing_partial(tmp_path, model):
    inputs = cohort(tmp_path / "in", LONG, 2)
    out = tmp_path / "ray"
    proc = ray_cohort(inputs, model, out, **PIPES)
    wait_for(actor_processes)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert not list(out.glob("*.seg.nrrd")) and not list(out.glob(".*partial*"))
    wait_for(lambda: not actor_processes(), timeout=60)  # the private cluster went with it


def test_without_ray_the_flag_names_the_install_command(tmp_path, model):
    code = "import sys; sys.modules['ray'] = None; from UNetSigmoidSegLib.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, "segment", str(CT), "--model", model, "-o", f"{tmp_path}/", "--ray"],
        cwd=str(REPO / "UNetSigmoidSeg"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and 'pip install "ray' in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())


def test_a_node_removed_mid_batch_loses_nothing(tmp_path, model, monkeypatch):
    """Three nodes on this computer (a head that runs no actor, two of one CPU each); the node running the one actor
    is removed mid-case: the actor restarts on the other node and every case is written once, equal to a local run."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # Ray's dashboard asks the cloud metadata address
    monkeypatch.setenv("RAY_USAGE_STATS_REPORT_URL", "http://127.0.0.1:9/")  # and reports "disabled" to Ray's server
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        inputs = cohort(tmp_path / "in", LONG, 2)
        out = tmp_path / "ray"
        proc = ray_cohort(inputs, model, out, "--json", "-q", address=cluster.address, **PIPES)
        victim = wait_for(actor_processes)[0]
        raylets = {w.all_processes["raylet"][0].process.pid: w for w in workers}
        host = next(raylets[p.pid] for p in victim.parents() if p.pid in raylets)
        time.sleep(1.0)
        cluster.remove_node(host)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        summary = json.loads(stdout)
        assert summary["cohort"]["done"] == 2 and victim.pid not in {r["pid"] for r in summary["cases"]}
        assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["case0.seg.nrrd", "case1.seg.nrrd"]
    finally:
        cluster.shutdown()
    local = cli("segment", inputs, "--model", model, "-o", f"{tmp_path / 'local'}/", "-q", *SLOW)
    assert local.returncode == 0, local.stderr
    assert_same_outputs(out, tmp_path / "local", ["case0", "case1"])


def test_ray_is_imported_only_by_runs_that_ask_for_it(tmp_path, model):
    """Only ``runners/ray_pool.py`` imports Ray (Slicer never loads it), and a local run does not."""
    import ast

    product = REPO / "UNetSigmoidSeg"
    importers = set()
    for path in product.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.relative_to(product).as_posix())
    assert importers == {"UNetSigmoidSegLib/runners/ray_pool.py"}
    code = (
        "import sys; from UNetSigmoidSegLib.cli import main; rc = main(sys.argv[1:]); "
        "sys.exit(3 if 'ray' in sys.modules else rc)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "segment", str(CT), "--model", model, "-o", f"{tmp_path}/", "-q", *FAST],
        cwd=str(REPO / "UNetSigmoidSeg"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr


def test_readme_ray_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Ray block: the extra it installs exists; both commands run as written (the second skips)."""
    from readme_blocks import block, example_files

    _language, text = block('pip install ".[ray]"')
    lines = [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]
    assert lines[0] == 'pip install ".[ray]"' and 'ray = ["ray' in (REPO / "pyproject.toml").read_text()
    example_files(tmp_path)
    bin_dir = Path(sys.executable).parent  # `unetsigmoidseg` as pip installs it
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = [
        subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        for line in lines[1:]
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    summary = json.loads((tmp_path / "cohort" / "unetsigmoidseg-summary.json").read_text())
    assert summary["cohort"] == {"done": 0, "failed": 0, "skipped": 2, "total": 2}
