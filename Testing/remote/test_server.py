"""The server's HTTP API against a real ``unetsigmoidseg serve`` on 127.0.0.1: the token on every request, size
limits before the body is read, model names only (never a path), the listing, the heartbeat."""

import http.client
import json
import os
import re
import socket
import stat
import struct
import time

import numpy as np
import pytest

from remote_fixtures import (
    models_dir_fixture,  # noqa: F401 - fixture
    raw_request,
    server_fixture,  # noqa: F401 - fixture
)
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume, wire
from UNetSigmoidSegLib.errors import ModelError, OptionError, RemoteError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")

ENDPOINTS = [
    ("GET", "/v1/health"),
    ("GET", "/v1/info"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/tiny"),
    ("POST", "/v1/models/inspect"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/abc/events"),
    ("GET", "/v1/jobs/abc/result"),
    ("DELETE", "/v1/jobs/abc"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/nothing-here"),
]


def job_body(model, volume=None, options=None, affine=None, **extra_fields):
    array = np.zeros((1, 8, 8, 8), np.int16) if volume is None else volume
    fields = dict(
        model=model,
        options=(options or SegmentOptions(device="cpu")).to_dict(),
        affine=(np.eye(4) if affine is None else affine).tolist(),
        **extra_fields,
    )
    return b"".join(wire.encode(fields, {"volume": array}))


@pytest.fixture(autouse=True)
def nothing_left_on_the_server(server):
    yield
    server.wait_idle()
    assert server.temp_entries() == []


@pytest.mark.parametrize("token", [None, "wrong-token", "Bearer", "ünïcode"], ids=["none", "wrong", "empty", "unicode"])
def test_every_request_without_the_token_is_401_without_detail_and_logged(server, token):
    before = server.log().count("authentication failed")
    for method, path in ENDPOINTS:
        headers = {} if token is None else {"Authorization": ("Bearer " + token).encode("utf-8")}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path, body=b"x" * 100 if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        assert response.status == 401, (method, path)
        assert json.loads(response.read()) == {"error": "unauthorized"}  # no detail: not which part was wrong
        assert response.getheader("WWW-Authenticate") == "Bearer"
        conn.close()
    time.sleep(0.3)
    log = server.log()
    assert log.count("authentication failed") - before == len(ENDPOINTS)
    assert "authentication failed: GET /v1/health from 127.0.0.1" in log
    assert "wrong-token" not in log and server.token not in log  # nothing of a token is logged


def test_the_right_token_opens_every_endpoint(server):
    status, health = raw_request(server, "GET", "/v1/health")
    assert status == 200 and health["status"] == "ok" and abs(health["server_time"] - time.time()) < 5
    assert health["busy"] is False and health["queued"] == 0 and len(health["instance"]) == 32
    status, _ = raw_request(server, "GET", "/v1/health", headers={"Authorization": "bearer " + server.token})
    assert status == 200  # the scheme is case-insensitive
    assert raw_request(server, "GET", "/docs")[0] == 404  # no API browser behind the token either


def test_wrong_token_gives_a_clear_error_to_the_runner(server):
    runner = server.runner(token="not-the-token")
    volume = Volume(np.zeros((1, 8, 8, 8), np.int16), np.eye(4))
    with pytest.raises(RemoteError, match="refused the token.*401") as err:
        runner.submit(volume, ModelSpec(name="tiny"), SegmentOptions()).wait(30)
    assert err.value.reason == "auth" and "token file" in err.value.hint
    assert runner.describe() is None
    deadline = time.time() + 30
    while runner.refreshing:
        assert time.time() < deadline
        time.sleep(0.05)
    assert runner.connection_error is not None and runner.connection_error.reason == "auth"


def test_token_file_is_private_and_the_token_is_not_printed_into_a_service_log(server):
    assert stat.S_IMODE(os.stat(server.token_file).st_mode) == 0o600
    # stdout is a pipe here, as under systemd or docker, whose logs would keep it: the banner names the file only
    assert not [line for line in server.banner if server.token in line]
    assert any(str(server.token_file) in line and "not printed" in line for line in server.banner)
    assert any("ssh -N -L" in line for line in server.banner)  # how to reach it from another computer
    assert any("--certfile cert.pem --keyfile key.pem" in line for line in server.banner)


def test_listing_names_every_model_with_its_summary_and_no_server_path(server, models_dir):
    os.symlink("/etc", models_dir / "escape")  # links out of the folder are never served
    os.symlink("/etc/hostname", models_dir / "hostname.pt")
    (models_dir / "notes.txt").write_text("not a model")
    try:
        status, listing = raw_request(server, "GET", "/v1/models")
        assert status == 200
        names = [m["name"] for m in listing["models"]]
        assert names == ["BrainT1UNet", "tiny", "tiny2"]
        by_name = {m["name"]: m for m in listing["models"]}
        assert by_name["BrainT1UNet"]["summary"].startswith("bundle: UNet, 1→1 channels, activation sigmoid")
        assert by_name["tiny"]["info"]["labels"] == ["body"] and by_name["tiny2"]["info"]["out_channels"] == 2
        assert str(models_dir) not in json.dumps(listing) and by_name["tiny"]["info"]["path"] == "tiny"
        for name in ("escape", "hostname", "notes"):
            assert raw_request(server, "GET", f"/v1/models/{name}")[0] == 404
    finally:
        for name in ("escape", "hostname.pt", "notes.txt"):
            os.remove(models_dir / name)


@pytest.mark.parametrize(
    "model, status, message",
    [
        ({"path": "/etc/passwd"}, 400, "never opens a path a client sends"),
        ({"path": "", "name": "../../etc/passwd"}, 400, "not a model name"),
        ({"path": "", "name": "tiny.pt"}, 400, "not a model name"),
        ({"path": "", "name": "nosuch"}, 404, "no model 'nosuch'.*BrainT1UNet, tiny, tiny2"),
        ({"path": "", "name": "tiny", "network_config": "/etc/x.json"}, 400, "server's to decide"),
        ({"path": "", "name": "tiny", "trust_bundle": True}, 400, "server's to decide"),
        ({"path": "", "name": "tiny", "evil": 1}, 400, "Unknown model option"),
        (None, 400, "runs its own models, by name"),
    ],
)
def test_models_are_chosen_by_name_only(server, model, status, message):
    got, body = raw_request(server, "POST", "/v1/jobs", body=job_body(model))
    assert got == status, body
    assert re.search(message, body["error"]["message"] + " " + body["error"]["hint"]), body


def test_a_path_in_the_url_is_not_a_model(server):
    for path in ("/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/%2Fetc%2Fpasswd", "/v1/models/.."):
        status, body = raw_request(server, "GET", path)
        assert status in (400, 404), (path, status, body)


def test_uploads_are_refused_unless_the_server_allows_them(server, models_dir):
    body = b"".join(
        wire.encode(
            {"upload": {"suffix": ".pt"}, "options": SegmentOptions().to_dict(), "affine": np.eye(4).tolist()},
            {"volume": np.zeros((1, 8, 8, 8), np.int16), "model": np.frombuffer(b"PK-not-a-model", np.uint8)},
        )
    )
    for path in ("/v1/jobs", "/v1/models/inspect"):
        status, answer = raw_request(server, "POST", path, body=body)
        assert status == 403 and "does not accept model files" in answer["error"]["message"], answer
        assert "--allow-upload" in answer["error"]["hint"]
    runner = server.runner()
    with pytest.raises(RemoteError, match="runs only its own models") as err:
        runner.inspect(ModelSpec(str(models_dir / "tiny.pt"))).wait(60)
    assert err.value.reason == "refused" and "tiny2" in err.value.hint


def test_a_body_announced_too_large_is_refused_before_it_is_read(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\nContent-Length: {10**12}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"only a few bytes of a terabyte")
    answer = b""
    while b"limit" not in answer:  # headers and body may come in separate packets; the server then closes
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    answer = answer.decode("utf-8", "replace")
    sock.close()
    assert answer.startswith("HTTP/1.1 413") and "over this server's limit of 16777216 bytes" in answer


def test_a_streamed_body_is_cut_off_at_the_limit(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (os.urandom(1 << 20) for _ in range(20))  # 20 MB, no Content-Length: chunked
    conn.request("POST", "/v1/jobs", body=chunks, headers={"Authorization": "Bearer " + server.token})
    try:
        response = conn.getresponse()
        assert response.status == 413 and b"over this server's limit" in response.read()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client finished sending; the partial spool must still be gone
    conn.close()


def test_a_small_body_declaring_a_huge_volume_is_refused_before_decompressing(server):
    data = job_body(ModelSpec(name="tiny").to_dict())
    (length,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12 : 12 + length])
    header["arrays"][0]["shape"] = [1, 4096, 4096, 64]  # 2 GiB of int16 declared, a few bytes sent
    raw = json.dumps(header).encode()
    bomb = data[:8] + struct.pack(">I", len(raw)) + raw + data[12 + length :]
    status, body = raw_request(server, "POST", "/v1/jobs", body=bomb)
    assert status == 413 and body["error"]["reason"] == "too_large", body
    assert "over this server's limit of 50331648 bytes" in body["error"]["message"]


def test_the_runner_checks_the_limits_before_sending(server):
    runner = server.runner()
    runner.server_info()
    sent = runner.counters.sent
    big = np.zeros((1, 256, 256, 200), np.float32)  # 50 MiB raw: over the 48 MB volume limit
    with pytest.raises(RemoteError, match="over the server's limit of 48 MB") as err:
        runner.submit(Volume(big, np.eye(4)), ModelSpec(name="tiny"), SegmentOptions()).wait(60)
    assert err.value.reason == "too_large" and runner.counters.sent == sent  # nothing was uploaded


@pytest.mark.parametrize(
    "change, message",
    [
        ({"affine": [[1, 0], [0, 1]]}, "finite 4×4"),
        ({"options": {"threshold": 7}}, "outside \\[0, 1\\]"),
        ({"options": {"bogus": 1}}, "Unknown segment option"),
    ],
)
def test_bad_options_are_refused_at_once(server, change, message):
    fields = {"model": ModelSpec(name="tiny").to_dict(), "options": {}, "affine": np.eye(4).tolist()}
    fields.update(change)
    body = b"".join(wire.encode(fields, {"volume": np.zeros((1, 8, 8, 8), np.int16)}))
    status, answer = raw_request(server, "POST", "/v1/jobs", body=body)
    assert status == 400 and re.search(message, answer["error"]["message"]), answer


def test_engine_errors_come_back_as_the_same_user_errors(server):
    runner = server.runner()
    volume = Volume(np.zeros((2, 16, 16, 16), np.float32), np.eye(4))  # 2 channels for a 1-channel model
    from UNetSigmoidSegLib.errors import InputError

    with pytest.raises(InputError, match="expects 1 input channel"):
        runner.submit(volume, ModelSpec(name="tiny"), SegmentOptions(device="cpu")).wait(120)
    with pytest.raises(OptionError, match="2 thresholds given for 1 segments"):
        opts = SegmentOptions(device="cpu", threshold=[0.3, 0.4])
        runner.submit(Volume(np.zeros((1, 16, 16, 16), np.int16), np.eye(4)), ModelSpec(name="tiny"), opts).wait(120)
    with pytest.raises(ModelError, match="no model 'gone'"):
        runner.inspect(ModelSpec(name="gone")).wait(60)


def _frame(fields, arrays, header_edit=None, raw_header=None):
    """A request frame; ``header_edit(header)`` changes the decoded header, ``raw_header`` replaces it as bytes."""
    data = b"".join(wire.encode(fields, arrays))
    (length,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12 : 12 + length])
    if header_edit is not None:
        header_edit(header)
    raw = raw_header(header) if raw_header is not None else json.dumps(header).encode()
    return data[:8] + struct.pack(">I", len(raw)) + raw + data[12 + length :]


def _deep(header):
    """The header with a field nested 100,000 lists deep (json's recursion limit is far below)."""
    text = json.dumps(header)
    return text.replace('"fields": {', '"fields": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1).encode()


def _wrapping_shape(header):
    header["arrays"][0]["shape"] = [1, 2**39, 2**39, 2**39]  # 2^117 voxels: 0 in 64-bit arithmetic


MODEL = ModelSpec(name="tiny").to_dict()
VOLUME = {"volume": np.zeros((1, 8, 8, 8), np.int16)}
OPTIONS = SegmentOptions(device="cpu").to_dict()


@pytest.mark.parametrize(
    "fields, arrays, edit, raw, status, message",
    [
        ({"model": MODEL, "options": OPTIONS, "affine": "eye(4)"}, VOLUME, None, None, 400, "4×4 matrix"),
        ({"model": MODEL, "options": OPTIONS, "affine": [[1, 0, 0, 0], [0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]},
         VOLUME, None, None, 400, "4×4 matrix"),
        ({"model": MODEL, "options": OPTIONS, "affine": [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
         VOLUME, None, None, 400, "singular"),
        ({"model": MODEL, "options": OPTIONS, "affine": np.diag([1e300, 1.0, 1.0, 1.0]).tolist()},
         VOLUME, None, None, 400, "voxel spacing"),
        ({"model": MODEL, "options": OPTIONS, "affine": np.eye(4).tolist()}, VOLUME, None, _deep, 400, "nests"),
        ({"model": MODEL, "options": OPTIONS, "affine": np.eye(4).tolist()}, VOLUME, _wrapping_shape, None, 413,
         "over this server's limit"),
        ({"model": MODEL, "options": OPTIONS, "affine": np.eye(4).tolist()},
         dict(VOLUME, model=np.zeros(1 << 20, np.uint8)), None, None, 400, "only with an uploaded model"),
    ],
    ids=["string-affine", "ragged-affine", "singular-affine", "absurd-spacing", "deep-header", "shape-wraps-64-bit",
         "unused-array"],
)  # fmt: skip
def test_every_malformed_request_is_a_4xx_with_a_one_line_reason(server, fields, arrays, edit, raw, status, message):
    body = _frame(fields, arrays, edit, raw)
    got, answer = raw_request(server, "POST", "/v1/jobs", body=body)
    assert got == status, answer
    text = answer["error"]["message"]
    assert message in text and "\n" not in text and " at 0x" not in text and "internal" not in answer["error"]["kind"]
    assert str(server.temp_root) not in json.dumps(answer)
    assert server.runner().health()["ready"]  # the server goes on


def test_bodies_arriving_at_once_never_spool_past_the_queue_limit(server):
    """--max-queue 1: of four clients sending their bodies at once (slowly), one holds the place and three are told
    'busy' at once, before their bodies are read; the spool folder never holds more than the queue takes."""
    header = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 4000000\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(header + b"\0" * 100_000)  # a body well begun, far from finished
            socks.append(sock)
        answers = []
        for sock in socks:
            sock.settimeout(3)
            try:
                answers.append(sock.recv(200).split(b"\r\n")[0])
            except socket.timeout:
                answers.append(b"(still sending)")
        assert sorted(answers).count(b"HTTP/1.1 503 Service Unavailable") == 3, answers
        assert answers.count(b"(still sending)") == 1, answers
        spooled = [n for n in server.temp_entries() if n.endswith(".body")]
        assert len(spooled) <= 1, spooled
    finally:
        for sock in socks:
            sock.close()
    deadline = time.time() + 10
    while server.temp_entries() and time.time() < deadline:  # the one left half-sent: removed when it went away
        time.sleep(0.1)
    assert server.runner().health()["queued"] == 0
