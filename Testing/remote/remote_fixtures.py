"""Real servers for the remote tests: ``unetsigmoidseg serve`` started in a subprocess on 127.0.0.1 (uvicorn), a
folder of real models, and a TCP proxy the tests own to break the network from outside (no HTTP mocks).

Test files import the ``*_fixture`` functions (registered under their ``name=``), as the widget tests do."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch

from conftest import REPO, shared_data, tiny_unet
from UNetSigmoidSegLib.contract.messages import Progress

DEMO_BUNDLE = REPO / "Resources" / "Models" / "BrainT1UNet"
T1_HEAD = REPO / "Resources" / "Data" / "T1_head.nii.gz"


def make_models(folder: Path) -> Path:
    """A models folder: ``tiny`` (1 output, CT normalisation in its JSON), ``tiny2`` (2 outputs, sigmoid, z-score)
    and a copy of the demo bundle ``BrainT1UNet``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_unet(seed=1).state_dict(), folder / "tiny.pt")
    (folder / "tiny.json").write_text('{"normalization": "ct", "ct_window": [-200, 300], "labels": ["body"]}')
    torch.save(tiny_unet(out_channels=2, seed=2).state_dict(), folder / "tiny2.pt")
    (folder / "tiny2.json").write_text('{"activation": "sigmoid", "labels": ["a", "b"], "normalization": "zscore"}')
    shutil.copytree(DEMO_BUNDLE, folder / "BrainT1UNet")
    return folder


class Server:
    """One ``unetsigmoidseg serve`` process. ``temp_dir()``: its private spool folder; ``log()``: its stderr."""

    def __init__(self, models: Path, root: Path, *extra: str, port: int = 0, token_file: Optional[Path] = None):
        self.models, self.root = models, root
        self.token_file = token_file or root / "server.token"
        self.temp_root = root / "server-temp"
        self.temp_root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"server-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "--models", str(models), "--port", str(port)]
        cmd += ["--token-file", str(self.token_file), "--temp-dir", str(self.temp_root), *extra]
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            cmd,
            cwd=str(REPO / "UNetSigmoidSeg"),
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.banner: List[str] = []
        self.client_options: dict = {}
        self.url = self._read_url(90.0)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.token = self.token_file.read_text().strip()

    def _read_url(self, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.popen.stdout.readline().decode("utf-8", "replace")
            if not line:
                raise AssertionError(f"server exited ({self.popen.poll()}):\n{self.log()}")
            self.banner.append(line.rstrip())
            found = re.search(r"Listening on (https?://\S+)", line)
            if found:
                threading.Thread(target=self._drain, daemon=True).start()
                return found.group(1)
        raise AssertionError("no 'Listening on' line from the server")

    def _drain(self) -> None:
        for line in iter(self.popen.stdout.readline, b""):
            self.banner.append(line.decode("utf-8", "replace").rstrip())

    def runner(self, token: Optional[str] = None, **kwargs):
        """A ``RemoteRunner`` for this server (with ``client_options``, e.g. the ``cafile`` of a TLS server)."""
        from UNetSigmoidSegLib.runners.remote import RemoteRunner

        return RemoteRunner(self.url, token=token or self.token, **dict(self.client_options, **kwargs))

    def wait_ready(self, timeout: float = 180.0) -> None:
        runner = self.runner()
        deadline = time.time() + timeout
        while not runner.health()["ready"]:
            assert time.time() < deadline, "server not ready"
            time.sleep(0.2)

    def temp_dir(self) -> Path:
        folders = [p for p in self.temp_root.iterdir() if p.name.startswith("unetseg-remote-")]
        assert len(folders) == 1, folders
        return folders[0]

    def temp_entries(self) -> List[str]:
        return sorted(p.name for p in self.temp_dir().iterdir() if p.name != "owner.pid")

    def wait_idle(self, timeout: float = 30.0) -> dict:
        """Until the server runs and queues nothing; its health then."""
        deadline = time.time() + timeout
        while True:
            health = self.runner().health()
            if not health["busy"] and not health["queued"]:
                return health
            assert time.time() < deadline, f"server still busy: {health}"
            time.sleep(0.1)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="module", name="models_dir")
def models_dir_fixture(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module", name="server")
def server_fixture(models_dir, tmp_path_factory):
    """A warm server shared by a test module: queue of 1, clients silent for 5 s are dropped, requests up to
    16 MB and volumes up to 48 MB."""
    limits = ("--max-request-mb", "16", "--max-volume-mb", "48")
    srv = Server(models_dir, tmp_path_factory.mktemp("server"), "--max-queue", "1", "--client-timeout", "5", *limits)
    srv.wait_ready()
    yield srv
    srv.stop()


def ct_volume():
    """The real CT (TotalSegmentator example, 122×101×30, int16 HU) as an engine ``Volume``."""
    from UNetSigmoidSegLib.engine.files.volume import read_volume

    return read_volume(str(shared_data("totalsegmentator", "example_ct_sm.nii.gz")))


def long_volume():
    """A real CT (aorta crop, 120×126×164 int16) — with roi 16 and overlap 0.5 over a thousand windows: seconds of
    work on the CPU, so a test can act while it runs."""
    from UNetSigmoidSegLib.engine.files.volume import read_volume

    return read_volume(str(shared_data("totalsegmentator", "aorta_ct_cropped.nii.gz")))


def wait_for_stage(job, stage: str = "inference", timeout: float = 120.0) -> list:
    """Poll ``job`` until a progress message of ``stage`` with a fraction above 0; returns the messages seen."""
    seen = []
    deadline = time.time() + timeout
    while True:
        for message in job.poll():
            seen.append(message)
            if isinstance(message, Progress) and message.stage == stage and message.fraction > 0:
                return [m for m in seen if isinstance(m, Progress)]
            assert message.type not in ("result", "error", "cancelled"), seen
        assert time.time() < deadline, f"no {stage} progress: {seen}"
        time.sleep(0.02)


class FaultProxy:
    """A TCP proxy in front of a server that the test breaks from outside: ``cut()`` closes every connection and
    refuses new ones; ``cut_after(n)`` does so once ``n`` bytes went from clients to the server."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.sockets: List[socket.socket] = []
        self.upstream_bytes = 0
        self.limit: Optional[int] = None
        self.broken = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, n: int) -> None:
        self.limit = self.upstream_bytes + n

    def cut(self) -> None:
        self.broken.set()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.broken.is_set():
                client.close()  # the network is down: the connection dies at once
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.broken.is_set():
                    break
                if up:
                    with self.lock:
                        self.upstream_bytes += len(data)
                        over = self.limit is not None and self.upstream_bytes >= self.limit
                    if over:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def make_pki(folder: Path) -> dict:
    """Test certificates made with the ``openssl`` command (the test is skipped without it), EC P-256, valid 2 days:
    a CA ``ca`` that signs the server's (``server``, for 127.0.0.1), a client's (``alice``) and an expired client's
    (``expired``); another CA ``other`` that signs ``mallory``'s. ``{name: (certificate, key)}`` (keys 0600)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    made = {}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=str(folder))

    for name, signer, days, san in (
        ("ca", None, "2", ""),
        ("other", None, "2", ""),
        ("server", "ca", "2", "IP:127.0.0.1"),
        ("alice", "ca", "2", "DNS:alice"),
        ("expired", "ca", "0", "DNS:expired"),
        ("mallory", "other", "2", "DNS:mallory"),
    ):
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        if signer is None:
            run("req", "-x509", *ec, "-keyout", str(key), "-out", str(cert), "-days", days, "-subj", f"/CN={name}")
        else:
            (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
            run("req", *ec, "-keyout", str(key), "-out", f"{name}.csr", "-subj", f"/CN={name}")
            ca_cert, ca_key = made[signer]
            signing = ["-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial", str(len(made) + 1), "-days", days]
            run("x509", "-req", "-in", f"{name}.csr", *signing, "-extfile", f"{name}.ext", "-out", str(cert))
        os.chmod(key, 0o600)
        made[name] = (cert, key)
    return made


def raw_request(server: "Server", method: str, path: str, token: Optional[str] = "", body: bytes = b"", headers=None):
    """One plain HTTP request (``http.client``); ``token=""``: the server's, ``None``: no Authorization header.
    Returns ``(status, parsed JSON or the bytes)``."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = "Bearer " + (token or server.token)
    conn.request(method, path, body=body or None, headers=sent)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def same_result(a, b) -> None:
    """Identical masks and probabilities within 1/255 (one quantisation step), same labels and thresholds."""
    assert a.labels == b.labels and a.thresholds == b.thresholds and a.activation == b.activation
    assert np.array_equal(a.masks, b.masks)
    diff = np.abs(a.probabilities.quantized.astype(int) - b.probabilities.quantized.astype(int))
    assert diff.max() <= 1, diff.max()
    if a.probabilities.argmax is not None:
        assert np.array_equal(a.probabilities.argmax, b.probabilities.argmax)
    assert np.allclose(a.affine, b.affine) and np.allclose(a.spacing, b.spacing)
