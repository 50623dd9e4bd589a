"""Nothing leaves the machine: a run on the OpenVINO backend (the one library here that ships usage telemetry) makes
no network connection but to loopback, and OpenVINO's telemetry package is never imported. Checked in a fresh
process with Python's audit hooks recording every connection, address lookup and process start."""

import json
import subprocess
import sys

from conftest import REPO

CHILD = r"""
import json, sys
attempts = []

def audit(event, args):
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        attempts.append(["connect", str(host)])
    elif event == "socket.getaddrinfo":
        attempts.append(["lookup", str(args[0])])
    elif event in ("subprocess.Popen", "os.fork", "os.posix_spawn"):
        attempts.append([event, str(args[:2])])

sys.addaudithook(audit)
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from monai.networks.nets import UNet
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume
from UNetSigmoidSegLib.runners import make_runner

torch.manual_seed(0)
torch.save(UNet(3, 1, 1, (4, 8, 16), (2, 2), num_res_units=1).eval().state_dict(), sys.argv[2] + "/m.pt")
open(sys.argv[2] + "/m.json", "w").write('{"normalization": "none"}')
volume = Volume(np.random.default_rng(0).normal(size=(1, 48, 48, 16)).astype(np.float32), np.eye(4))
options = SegmentOptions(device="cpu", roi_size=[32, 32, 16], backend="openvino")
result = make_runner().submit(volume, ModelSpec(sys.argv[2] + "/m.pt"), options).wait()
import openvino.tools.ovc.telemetry_utils as ovc_telemetry
print(json.dumps({
    "backend": result.backend.backend,
    "attempts": attempts,
    "telemetry_module": repr(sys.modules.get("openvino_telemetry", "absent")),
    "ovc_uses": ovc_telemetry.tm.__name__,
}))
"""


def test_an_openvino_run_connects_nowhere_and_never_imports_openvino_telemetry(tmp_path):
    env_cache = {"UNETSEG_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "UNetSigmoidSeg"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_cache,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["backend"] == "openvino"  # the library with telemetry really ran
    outside = [a for a in seen["attempts"] if a[0] in ("connect", "lookup") and not _loopback(a[1])]
    assert outside == [], outside
    assert seen["telemetry_module"] == "None"  # blocked before OpenVINO could import it
    assert seen["ovc_uses"].endswith("telemetry_stub")  # OpenVINO's own no-op


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "") or host.startswith("127.") or host.startswith("/")


def test_the_suite_wide_network_audit_sees_an_attempt_in_a_subprocess(tmp_path):
    """The audit every test process and subprocess runs under (Testing/conftest.py) records a lookup off this
    computer made by a subprocess — so a suite that records none really made none."""
    record = tmp_path / "attempts.jsonl"
    code = "import socket\ntry:\n    socket.getaddrinfo('telemetry.example.invalid', 443)\nexcept OSError:\n    pass\n"
    env = {"UNETSEG_NET_AUDIT": str(record), "PYTHONPATH": str(REPO / "Testing" / "subprocess_hooks")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(x["event"], x["host"]) for x in lines] == [("socket.getaddrinfo", "telemetry.example.invalid")]
