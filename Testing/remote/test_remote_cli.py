"""``unetsigmoidseg segment --server`` (one input and a batch folder: the same files as a local run),
``unetsigmoidseg serve`` refusing bad set-ups before it listens, and a server with TLS and ``--allow-upload``:
uploaded models only through the untrusted path, nothing of them kept."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, shared_data
from remote_fixtures import (
    DEMO_BUNDLE,
    Server,
    ct_volume,
    models_dir_fixture,  # noqa: F401 - fixture
    same_result,
    server_fixture,  # noqa: F401 - fixture
)
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions
from UNetSigmoidSegLib.errors import ModelError, RemoteError
from UNetSigmoidSegLib.runners.inprocess import InProcessRunner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")
CT = str(shared_data("totalsegmentator", "example_ct_sm.nii.gz"))
MR = str(shared_data("totalsegmentator", "example_mr_sm.nii.gz"))


def test_segment_on_the_server_writes_the_same_files_as_a_local_run(server, models_dir, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(CT, cases / "ct.nii.gz")
    shutil.copy(MR, cases / "mr.nii.gz")
    common = ["--roi-size", "32", "32", "16", "--device", "cpu", "--json", "--quiet", "--threshold", "0.4"]
    outputs = {}
    for where, model, extra in (
        ("remote", "tiny2", ["--server", server.url, "--token-file", str(server.token_file)]),
        ("local", str(models_dir / "tiny2.pt"), []),
    ):
        out = tmp_path / where
        out.mkdir()
        argv = ["segment", str(cases), "--model", model, "--output", str(out), "--probabilities", str(out)]
        assert main(argv + common + extra) == 0, capsys.readouterr().err
        outputs[where] = (out, json.loads(capsys.readouterr().out))
    (out_r, summary_r), (out_l, summary_l) = outputs["remote"], outputs["local"]
    assert [c["segments"] for c in summary_r["cases"]] == [c["segments"] for c in summary_l["cases"]]
    assert all(c["server"]["url"] == server.url and c["server"]["server_job"] for c in summary_r["cases"])
    for name in ("ct.seg.nrrd", "mr.seg.nrrd"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(out_r / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(out_l / name)))
        assert np.array_equal(a, b) and a.any()
    for name in ("ct_probabilities.nrrd", "mr_probabilities.nrrd"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(out_r / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(out_l / name)))
        assert np.abs(a - b).max() <= 1 / 255 + 1e-6
    assert server.temp_entries() == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nosuch"], r"error: The server has no model 'nosuch'\nfix: Its models: BrainT1UNet, tiny, tiny2"),
        (["--model", "tiny", "--token-file", "WRONG"], r"refused the token \(401"),
        (["--model", "tiny", "--worker"], r"--worker and --server exclude each other"),
        (["--model", "./tiny.pt"], r"Model not found|does not accept model files"),
    ],
)
def test_segment_on_the_server_errors_are_exit_2_with_a_fix(server, tmp_path, capsys, args, message):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    os.chmod(wrong, 0o600)
    args = [str(wrong) if a == "WRONG" else a for a in args]
    base = ["segment", CT, "--server", server.url, "-o", str(tmp_path / "x.seg.nrrd"), "--quiet"]
    token = [] if "--token-file" in args else ["--token-file", str(server.token_file)]
    assert main(base + token + args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_inspect_a_server_model(server, capsys):
    argv = ["inspect", "BrainT1UNet", "--server", server.url, "--token-file", str(server.token_file), "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == "BrainT1UNet" and info["labels"] == ["brain"] and info["format"] == "bundle"


def test_segment_with_no_server_is_exit_2(tmp_path, capsys):
    argv = ["segment", CT, "--server", "http://127.0.0.1:9", "--model", "tiny", "-o", str(tmp_path / "x.seg.nrrd")]
    token = tmp_path / "t"
    token.write_text("t")
    os.chmod(token, 0o600)
    assert main(argv + ["--token-file", str(token)]) == 2
    assert "connection refused" in capsys.readouterr().err


def serve(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", *args],
        cwd=str(REPO / "UNetSigmoidSeg"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_bad_setups_before_listening(tmp_path, models_dir):
    token = tmp_path / "open.token"
    token.write_text("abc\n")
    os.chmod(token, 0o644)
    cases = [
        (["--models", str(tmp_path / "missing")], "Models folder not found"),
        (["--models", str(models_dir), "--token-file", str(token)], "can be read by other users.*chmod 600"),
        (["--models", str(models_dir), "--certfile", str(token)], "needs both --certfile and --keyfile"),
        (["--models", str(models_dir), "--device", "tpu"], "Unknown device"),
        (["--models", str(models_dir), "--max-queue", "-1"], "--max-queue must be"),
        (["--models", str(models_dir), "--body-timeout", "0"], "--body-timeout 0.0 is outside"),
        (["--models", str(models_dir), "--host", "0.0.0.0"], "without TLS is refused.*--insecure-http"),
        (["--models", str(models_dir), "--certfile", str(token), "--keyfile", str(token)], "private key.*chmod 600"),
    ]
    for args, message in cases:
        default_token = [] if "--token-file" in args else ["--token-file", str(tmp_path / "t.token")]
        done = serve(*args, "--port", "0", *default_token)
        assert done.returncode == 2 and re.search(message, done.stderr, re.S), (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_serve_says_when_the_port_is_taken(server, tmp_path, models_dir):
    temp = tmp_path / "temp"
    temp.mkdir()
    args = ["--models", str(models_dir), "--port", str(server.port), "--token-file", str(tmp_path / "t")]
    done = serve(*args, "--temp-dir", str(temp))
    assert done.returncode == 2 and f"Cannot listen on 127.0.0.1:{server.port}" in done.stderr
    assert list(temp.iterdir()) == []  # nothing was created before the port was known to be free


@pytest.fixture(scope="module")
def tls_upload_server(models_dir, tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed test certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    srv = Server(models_dir, root, "--certfile", str(cert), "--keyfile", str(key), "--allow-upload")
    srv.cert = cert
    srv.client_options["cafile"] = str(cert)
    yield srv
    srv.stop()


def test_tls_needs_the_certificate_trusted(tls_upload_server):
    srv = tls_upload_server
    assert srv.url.startswith("https://127.0.0.1:")
    with pytest.raises(RemoteError, match="TLS certificate is not trusted") as err:
        srv.runner(cafile=None).health()
    assert err.value.reason == "tls" and "cafile" in err.value.hint
    runner = srv.runner(cafile=str(srv.cert))
    assert runner.health()["status"] == "ok"
    srv.wait_ready()
    names = [m["name"] for m in runner.models()]
    assert names == ["BrainT1UNet", "tiny", "tiny2"]


def test_an_uploaded_model_runs_untrusted_and_nothing_of_it_is_kept(tls_upload_server, models_dir, tmp_path):
    srv = tls_upload_server
    srv.wait_ready()
    runner = srv.runner(cafile=str(srv.cert))
    local_file = tmp_path / "mine.pt"
    shutil.copy(models_dir / "tiny2.pt", local_file)
    shutil.copy(models_dir / "tiny2.json", tmp_path / "mine.json")  # the JSON next to it travels along
    info = runner.inspect(ModelSpec(str(local_file))).wait(120)
    assert info.path == "upload" and info.labels == ["a", "b"] and str(tmp_path) not in json.dumps(info.to_dict())
    options = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
    remote = runner.submit(ct_volume(), ModelSpec(str(local_file)), options).wait(300)
    same_result(InProcessRunner().submit(ct_volume(), ModelSpec(str(local_file)), options).wait(), remote)
    assert srv.temp_entries() == []
    evil = tmp_path / "EvilBundle"
    shutil.copytree(DEMO_BUNDLE, evil)
    config = json.loads((evil / "configs" / "inference.json").read_text())
    config["preprocessing"]["transforms"].insert(
        2, {"_target_": "Lambdad", "keys": "image", "func": f"$lambda x: open('{tmp_path}/pwned', 'w') or x"}
    )
    (evil / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="would run code"):
        runner.submit(ct_volume(), ModelSpec(str(evil)), options).wait(300)
    with pytest.raises(RemoteError, match="never runs a bundle's code"):
        runner.submit(ct_volume(), ModelSpec(str(evil), trust_bundle=True), options).wait(300)
    assert not (tmp_path / "pwned").exists() and srv.temp_entries() == []
    assert stat.S_IMODE(os.stat(srv.temp_dir()).st_mode) == 0o700


def test_a_label_in_an_uploaded_model_cannot_forge_a_server_log_line(tls_upload_server, models_dir, tmp_path):
    srv = tls_upload_server
    srv.wait_ready()
    forged = "2026-01-01 00:00:00,000 WARNING unetsigmoidseg.server: authentication failed: GET / from 10.0.0.66"
    local_file = tmp_path / "forger.pt"
    shutil.copy(models_dir / "tiny.pt", local_file)
    (tmp_path / "forger.json").write_text(json.dumps({"labels": ["liver\n" + forged + "\r\x1b[2K"]}))
    info = srv.runner(cafile=str(srv.cert)).inspect(ModelSpec(str(local_file))).wait(120)
    assert info.labels[0].startswith("liver\n")  # the client gets the label as it is
    log = srv.log()
    assert "liver\\x0a2026-01-01" in log  # the server logged it, escaped, on one line
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert "\x1b" not in log and "\r" not in log


def _https_post(srv, path, body):
    """(status, seconds) of one POST with the server's token over its TLS."""
    import http.client
    import ssl
    import time

    context = ssl.create_default_context(cafile=str(srv.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=120, context=context)
    t0 = time.perf_counter()
    conn.request(path[0], path[1], body=body, headers={"Authorization": f"Bearer {srv.token}"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, time.perf_counter() - t0


def test_an_upload_is_decompressed_off_the_event_loop_and_extra_arrays_are_refused_first(tls_upload_server):
    import threading

    from UNetSigmoidSegLib.contract import wire

    srv = tls_upload_server
    srv.wait_ready()
    zeros = np.zeros(512 << 20, np.uint8)  # 512 MiB that compress to about half a megabyte
    extra = b"".join(wire.encode({"upload": {"suffix": ".pt"}}, {"model": zeros[:10], "volume": zeros}))
    status, data, _ = _https_post(srv, ("POST", "/v1/models/inspect"), extra)
    assert status == 400 and b"carries a model only" in data
    bomb = b"".join(wire.encode({"upload": {"suffix": ".pt"}}, {"model": zeros}))
    del zeros
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(big=_https_post(srv, ("POST", "/v1/models/inspect"), bomb)))
    thread.start()
    health = []
    while thread.is_alive() and len(health) < 40:
        health.append(_https_post(srv, ("GET", "/v1/health"), None)[2])
    thread.join(180)
    assert answer["big"][0] == 400 and b"model" in answer["big"][1]  # not a checkpoint: a clear model error
    assert health and max(health) < 1.0, health  # other clients were answered while it was decompressed
    assert srv.temp_entries() == []


def test_torchscript_is_never_loaded_from_a_client(tls_upload_server, tmp_path):
    """A TorchScript network is code (its forward may never end, holding the server for everyone): refused as a file
    and as a bundle whose only network is models/model.ts, before anything of it is loaded."""
    import torch

    from conftest import tiny_unet

    srv = tls_upload_server
    srv.wait_ready()
    runner = srv.runner(cafile=str(srv.cert))
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(tiny_unet()), str(scripted))
    bundle = tmp_path / "TsBundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    (bundle / "models" / "model.pt").unlink()
    shutil.copy(scripted, bundle / "models" / "model.ts")
    for model in (scripted, bundle):
        with pytest.raises(ModelError, match="does not load TorchScript from clients") as err:
            runner.inspect(ModelSpec(str(model))).wait(120)
        assert "state_dict" in err.value.hint
        with pytest.raises(ModelError, match="does not load TorchScript from clients"):
            runner.submit(ct_volume(), ModelSpec(str(model)), SegmentOptions(device="cpu")).wait(120)
    assert srv.temp_entries() == []
    assert "TorchScript" not in " ".join(m.get("summary", "") for m in runner.models())  # nothing of them was loaded
