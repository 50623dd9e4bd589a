"""Mutual TLS on a real server (issue #20): ``serve --client-ca CA.pem`` lets in only clients whose certificate that
CA signed — refused at the TLS handshake otherwise, before a byte of HTTP — and the token still applies on top.
The client presents its certificate (``--client-cert`` / ``--client-key``, ``client_cert=`` / ``client_key=``) and a
refused handshake is a clear ``RemoteError`` / exit 2, not a broken connection. Certificates come from the openssl
command; everything runs on 127.0.0.1."""

import json
import os
import socket
import ssl
import subprocess
import sys

import pytest

from conftest import REPO
from remote_fixtures import Server, ct_volume, make_models, make_pki
from UNetSigmoidSegLib.cli import main
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions
from UNetSigmoidSegLib.errors import RemoteError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    models = make_models(tmp_path_factory.mktemp("models"))
    cert, key = pki["server"]
    srv = Server(
        models, tmp_path_factory.mktemp("mtls"), "--certfile", str(cert), "--keyfile", str(key),
        "--client-ca", str(pki["ca"][0]), "--head-timeout", "3",
    )  # fmt: skip
    srv.client_options.update(cafile=str(pki["ca"][0]), client_cert=str(pki["alice"][0]))
    srv.client_options["client_key"] = str(pki["alice"][1])
    srv.wait_ready()
    yield srv
    srv.stop()


def _handshake(server, pki, who):
    """(handshake completed, first bytes the server sent back to a request) for a raw TLS client ``who``."""
    context = ssl.create_default_context(cafile=str(pki["ca"][0]))
    if who is not None:
        context.load_cert_chain(*(str(p) for p in pki[who]))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    except (ssl.SSLError, OSError):
        raw.close()
        return False, b""
    try:
        sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode())
        return True, sock.recv(200)
    except (ssl.SSLError, OSError):
        return True, b""
    finally:
        sock.close()


def test_a_client_with_a_certificate_the_ca_signed_runs_end_to_end(server, capsys):
    runner = server.runner()
    try:
        assert server.url.startswith("https://") and runner.health()["ready"]
        assert runner.inspect(ModelSpec(name="tiny2")).wait(120).labels == ["a", "b"]
        volume = ct_volume()
        options = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
        result = runner.submit(volume, ModelSpec(name="tiny"), options).wait(timeout=300)
        assert result.masks.shape[1:] == volume.spatial_shape and result.masks.any()
    finally:
        runner.close()
    opts = server.client_options
    argv = ["inspect", "BrainT1UNet", "--server", server.url, "--token-file", str(server.token_file), "--json"]
    argv += ["--server-ca", opts["cafile"], "--client-cert", opts["client_cert"], "--client-key", opts["client_key"]]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["labels"] == ["brain"]
    assert any("Mutual TLS" in line for line in server.banner)


def test_the_token_still_applies_with_a_good_certificate(server):
    with pytest.raises(RemoteError, match=r"refused the token \(401") as err:
        server.runner(token="not-the-token").models()
    assert err.value.reason == "auth"


@pytest.mark.parametrize(
    "who, message",
    [
        (None, "requires a client certificate \\(mutual TLS\\)"),
        ("mallory", "refused this client's certificate"),  # signed by another CA
        ("expired", "refused this client's certificate"),  # signed by the CA, expired
    ],
)
def test_a_client_without_an_accepted_certificate_is_refused_at_the_handshake(server, pki, who, message):
    refusals = server.log().count("authentication failed")
    _completed, answer = _handshake(server, pki, who)
    assert answer == b"", answer  # not one byte of HTTP: the request never reached the application
    assert _handshake(server, pki, "alice")[1].startswith(b"HTTP/1.1 200")  # the same request with alice's
    options = dict(server.client_options, client_cert=None, client_key=None)
    if who is not None:
        options.update(client_cert=str(pki[who][0]), client_key=str(pki[who][1]))
    runner = server.runner(**options)
    with pytest.raises(RemoteError, match=message) as err:
        runner.health()
    assert err.value.reason == "tls" and "--client-cert" in err.value.hint
    with pytest.raises(RemoteError, match=message):
        runner.submit(ct_volume(), ModelSpec(name="tiny"), SegmentOptions(device="cpu")).wait(60)
    assert server.log().count("authentication failed") == refusals  # refused below HTTP: no request was read


def test_the_command_line_says_a_certificate_is_needed_with_exit_2(server, tmp_path, capsys):
    out = tmp_path / "x.seg.nrrd"
    argv = ["segment", str(REPO / "Resources" / "Data" / "T1_head.nii.gz"), "--model", "tiny", "-o", str(out)]
    argv += ["--server", server.url, "--token-file", str(server.token_file)]
    argv += ["--server-ca", server.client_options["cafile"]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "requires a client certificate (mutual TLS)" in err and "fix: " in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"client_cert": "missing.pem"}, "Cannot read the client certificate missing.pem"),
        ({"client_cert": "CERT"}, "not a PEM certificate with its unencrypted key"),  # the key is not in it
        ({"client_cert": "CERT", "client_key": "OTHER_KEY"}, "the key is not this certificate's"),
        ({"client_key": "KEY"}, "--client-key needs --client-cert"),
        ({"client_cert": "CERT", "client_key": "KEY", "url": "http://127.0.0.1:9"}, "over https only"),
    ],
)
def test_client_certificate_mistakes_are_clear_before_connecting(server, pki, kwargs, message):
    from UNetSigmoidSegLib.runners.remote import RemoteRunner

    paths = {"CERT": str(pki["alice"][0]), "KEY": str(pki["alice"][1]), "OTHER_KEY": str(pki["mallory"][1])}
    given = {k: paths.get(v, v) for k, v in kwargs.items()}
    url = given.pop("url", server.url)
    with pytest.raises(RemoteError, match=message) as err:
        RemoteRunner(url, token=server.token, cafile=server.client_options["cafile"], **given)
    assert err.value.hint and "\n" not in err.value.message


def test_client_ca_needs_tls_and_a_readable_ca(tmp_path, pki):
    models = make_models(tmp_path / "models")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cert, key = (str(p) for p in pki["server"])
    for extra, message in (
        (["--client-ca", str(pki["ca"][0])], "--client-ca (mutual TLS) needs the server's own TLS certificate"),
        (["--client-ca", str(not_pem), "--certfile", cert, "--keyfile", key], "Cannot read the client CA"),
        (["--client-ca", str(tmp_path / "gone.pem"), "--certfile", cert, "--keyfile", key], "Cannot read the client"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "--models", str(models), "--port", "0"]
            + ["--token-file", str(tmp_path / "t.token"), *extra],
            cwd=str(REPO / "UNetSigmoidSeg"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
        assert "\nfix: " in done.stderr and "Traceback" not in done.stderr
