"""Named tokens on a real server (issue #20): each user's own token, kept hashed, added and revoked without a
restart, optionally expiring; a job belongs to the token that submitted it (another token cannot follow, read or
cancel it); the audit log names the token, never its secret; a service's stdout never gets the first token."""

import http.client
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO
from remote_fixtures import Server, long_volume, make_models, wait_for_stage
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions
from UNetSigmoidSegLib.errors import CancelledError, OptionError, RemoteError
from UNetSigmoidSegLib.remote import identity


def token_cli(token_file, *words):
    cmd = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "token", *words, "--token-file", str(token_file)]
    return subprocess.run(cmd, cwd=str(REPO / "UNetSigmoidSeg"), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = make_models(tmp_path_factory.mktemp("models"))
    srv = Server(models, tmp_path_factory.mktemp("server"))
    srv.wait_ready()
    yield srv
    srv.stop()


def _secret(done):
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _request(server, method, path, secret):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(method, path, headers={"Authorization": f"Bearer {secret}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_tokens_are_added_listed_and_revoked_without_a_restart_and_kept_hashed(server):
    alice = _secret(token_cli(server.token_file, "add", "alice"))
    assert _request(server, "GET", "/v1/health", alice)[0] == 200  # the running server reads the new file
    names = identity.tokens_file(str(server.token_file))
    text = open(names).read()
    assert alice not in text and identity.digest(alice) in text  # only its SHA-256 is kept
    assert stat.S_IMODE(os.stat(names).st_mode) == 0o600
    listing = token_cli(server.token_file, "list")
    assert "alice: created" in listing.stdout and alice not in listing.stdout
    assert token_cli(server.token_file, "add", "alice").returncode == 2  # a name is given once
    assert token_cli(server.token_file, "add", "owner").returncode == 2  # the server's own token's name
    revoked = token_cli(server.token_file, "revoke", "alice")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _request(server, "GET", "/v1/health", alice)[0] == 401
    assert _request(server, "GET", "/v1/health", server.token)[0] == 200  # the owner's token is untouched
    log = server.log()
    assert alice not in log and server.token not in log


def test_an_expired_token_is_refused(server):
    names = identity.tokens_file(str(server.token_file))
    secret = identity.add(names, "visitor", expires_days=1)
    assert _request(server, "GET", "/v1/health", secret)[0] == 200
    entries = identity.read_entries(names)
    for entry in entries:
        if entry["name"] == "visitor":
            entry["expires"] = "2000-01-01T00:00:00+00:00"
    identity._write_entries(names, entries)
    time.sleep(0.05)
    assert _request(server, "GET", "/v1/health", secret)[0] == 401


def test_a_job_belongs_to_its_token(server):
    names = identity.tokens_file(str(server.token_file))
    bob, carol = identity.add(names, "bob"), identity.add(names, "carol")
    runner = server.runner(token=bob)
    try:
        options = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.5)  # seconds of work
        job = runner.submit(long_volume(), ModelSpec(name="tiny"), options)
        wait_for_stage(job, "inference")
        for method, path in (
            ("GET", f"/v1/jobs/{job.id}/events"),
            ("GET", f"/v1/jobs/{job.id}/result"),
            ("DELETE", f"/v1/jobs/{job.id}"),
        ):
            assert _request(server, method, path, carol)[0] == 404, (method, path)  # as an unknown job
            assert _request(server, method, path, server.token)[0] == 404, (method, path)  # the owner's neither
        assert _request(server, "GET", f"/v1/jobs/{job.id}/events?wait=0", bob)[0] == 200
        assert not job.done  # carol's DELETE did not cancel it
        job.cancel()
        with pytest.raises(CancelledError):
            job.wait(timeout=120)
    finally:
        runner.close()
    log = server.log()
    assert "token bob" in log and bob not in log and carol not in log


def test_the_first_token_is_not_printed_where_a_service_log_would_keep_it(server):
    # the fixture's server was started with stdout on a pipe (as systemd / docker run it)
    assert not any(server.token in line for line in server.banner)
    assert any("not printed: stdout is not a terminal" in line for line in server.banner)


def test_bad_token_names_and_a_world_readable_tokens_file_are_refused(tmp_path):
    path = str(tmp_path / "server.tokens.json")
    for name in ("", "a b", "x" * 65, "../etc", "owner"):
        with pytest.raises(OptionError):
            identity.add(path, name)
    identity.add(path, "dave")
    os.chmod(path, 0o644)
    with pytest.raises(OptionError, match="can be read by other users"):
        identity.read_entries(path)
    store = identity.TokenStore("owner-secret", path)
    assert store.identify(b"owner-secret") == "owner" and store.identify(b"anything") is None
    json.loads(open(path).read())  # still a plain JSON file


def test_a_revoked_token_gets_a_clear_error_in_the_client(server):
    names = identity.tokens_file(str(server.token_file))
    secret = identity.add(names, "erin")
    identity.revoke(names, "erin")
    with pytest.raises(RemoteError) as err:
        server.runner(token=secret).health()
    assert err.value.reason == "auth"


def test_on_a_terminal_the_first_token_is_shown_once(tmp_path):
    import pty
    import select
    import signal

    models = make_models(tmp_path / "models")
    master, slave = pty.openpty()
    token_file = tmp_path / "server.token"
    cmd = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "--models", str(models), "--port", "0"]
    cmd += ["--token-file", str(token_file), "--temp-dir", str(tmp_path)]
    proc = subprocess.Popen(
        cmd, cwd=str(REPO / "UNetSigmoidSeg"), stdout=slave, stderr=subprocess.DEVNULL, start_new_session=True
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.time() + 90
        while b"Listening on" not in seen and time.time() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                seen += os.read(master, 65536)
        time.sleep(0.5)  # the rest of the banner, written with the same print
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 65536)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        os.close(master)
    token = token_file.read_text().strip()
    lines = [line for line in seen.decode().splitlines() if token in line]
    assert len(lines) == 1 and "shown this once" in lines[0]
