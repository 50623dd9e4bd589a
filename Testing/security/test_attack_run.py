"""Outside attack run (issue #20): one real server — TLS with client certificates (mutual TLS), named tokens, uploads
on, short head and body timeouts — and a table of attacks from the network against it: connection floods, slow
headers, slow bodies, malformed wire, authentication, path tricks in model names, hostile uploads and TLS.

Every case must get its refusal (a 4xx with a one-line reason, a refused handshake, a closed connection) and no
answer may carry a Python repr, a traceback, a secret or a path of the server. Afterwards the server must still be
healthy, with nothing left in its spool, no payload run and no unexpected error in its log."""

import json
import os
import re
import socket
import sys
import threading
import time
from urllib.parse import quote

import numpy as np
import pytest
import torch
from attack_tools import (
    BODY_S,
    CASES,
    FIELDS,
    HEAD_S,
    MARGIN_S,
    REPO,
    Evil,
    Outcome,
    Target,
    array_edit,
    bundle_zip,
    case,
    checkpoint_bytes,
    first_answer,
    frame,
    get_head,
    post_head,
    send_slowly,
    submit,
    symlink_entry,
    timed_answer,
    torchscript_bytes,
    until_closed,
    upload,
    with_fields,
    with_options,
)
from hostile import tiny_unet

from remote_fixtures import Server, long_volume, make_models, make_pki  # noqa: E402 - attack_tools puts it on the path
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, wire
from UNetSigmoidSegLib.errors import RemoteError
from UNetSigmoidSegLib.remote import identity

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals"),
]
RESULTS = {}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack")
    pki = make_pki(root / "pki")
    models = make_models(root / "models")
    torch.save(tiny_unet(seed=3).state_dict(), root / "outside.pt")
    os.symlink(root / "outside.pt", models / "escape.pt")  # a link out of the models folder is no model
    cert, key = (str(p) for p in pki["server"])
    server = Server(
        models, root / "server", "--certfile", cert, "--keyfile", key, "--client-ca", str(pki["ca"][0]),
        "--allow-upload", "--head-timeout", str(HEAD_S), "--body-timeout", str(BODY_S), "--max-queue", "2",
        "--max-request-mb", "16", "--max-volume-mb", "48",
    )  # fmt: skip
    server.client_options.update(cafile=str(pki["ca"][0]), client_cert=str(pki["alice"][0]))
    server.client_options["client_key"] = str(pki["alice"][1])
    names = identity.tokens_file(str(server.token_file))
    tokens = {"owner": server.token}
    for name in ("alice", "bob", "carol"):
        tokens[name] = identity.add(names, name)
    identity.revoke(names, "carol")
    tokens["dave"] = identity.add(names, "dave", expires_days=1e-7)  # expired within a millisecond
    server.wait_ready()
    yield Target(server, pki, root, tokens)
    server.stop()


def forbidden(target):
    """What no answer may carry: the server's paths, a repr, a traceback, a secret."""
    return [str(target.root), str(REPO), sys.prefix, "site-packages", " object at 0x", "Traceback", 'File "'] + [
        secret for secret in target.tokens.values()
    ]


# ============================================================================================== connection floods
def _flood_idle(t):
    socks = [t.tls() for _ in range(300)]  # each a finished TLS handshake, then nothing
    try:
        during = t.request("GET", "/v1/health")
        closed = sum(until_closed(s, HEAD_S + MARGIN_S)[2] for s in socks)
    finally:
        for s in socks:
            s.close()
    if during.status != 200 or closed < len(socks):
        return Outcome("open", f"health {during.status} during; {closed} of {len(socks)} closed")
    return Outcome("closed", f"{closed} idle TLS connections closed; health answered during the flood")


def _flood_tcp(t):
    socks = [socket.create_connection(("127.0.0.1", t.port), timeout=10) for _ in range(200)]  # no handshake
    try:
        during = t.request("GET", "/v1/health")
    finally:
        for s in socks:
            s.close()
    return Outcome("served" if during.status == 200 else during.status, "health answered during 200 bare sockets")


def _flood_garbage_tls(t):
    statuses = [t.exchange(b"\x00\xffNOT HTTP AT ALL\r\n\r\n").status for _ in range(30)]
    status = statuses[0] if len(set(statuses)) == 1 else statuses
    return Outcome(status, "30 × not HTTP: Invalid HTTP request received.")


def _flood_garbage_tcp(t):
    results = []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        sock.sendall(os.urandom(512))  # no ClientHello
        results.append(until_closed(sock, MARGIN_S))
        sock.close()
    answered = [r[0] for r in results if r[0].startswith(b"HTTP")]
    closed = all(r[2] for r in results) and not answered
    return Outcome("closed" if closed else "open", f"{len(results)} sockets of random bytes closed at the TLS layer")


def _flood_pipelined(t):
    got = t.exchange(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 100, wait=3, first=False)
    count = got.raw.count("HTTP/1.1 401 Unauthorized")
    status = 401 if count == 100 == got.raw.count("HTTP/1.1 ") else f"{count} refusals"
    return Outcome(status, f"100 pipelined requests without a token: {count} × 401", got.raw)


def _flood_half_open(t):
    socks = [t.tls() for _ in range(30)]
    for s in socks:
        s.shutdown(socket.SHUT_WR)
    closed = sum(until_closed(s, HEAD_S + MARGIN_S)[2] for s in socks)
    for s in socks:
        s.close()
    return Outcome("closed" if closed == len(socks) else "open", f"{closed} half-closed connections closed")


def _flood_jobs(t):
    """Three seconds-long runs fill the queue of 2 (one runs, two wait); five more clients then submit at once: each
    is told 'busy' at once, before its body is read."""
    volume = long_volume()
    options = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.5)
    runners = [t.server.runner() for _ in range(3)]
    try:
        for runner in runners:
            runner.submit(volume, ModelSpec(name="tiny"), options)
        deadline = time.monotonic() + 120
        health = {}
        while not (health.get("busy") and health.get("queued") == 2):
            if time.monotonic() > deadline:
                return Outcome("never full", f"the queue did not fill: {health}")
            time.sleep(0.1)
            health = t.server.runner().health()
        answers = []

        def one():
            answers.append(t.request("POST", "/v1/jobs", frame()))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for runner in runners:
            runner.close()  # cancels their jobs on the server
    t.server.wait_idle(120)
    statuses = sorted({a.status for a in answers})
    return answers[0] if statuses == [503] and len(answers) == 5 else Outcome(str(statuses), "not all busy")


for name, fn, expect, pattern in (
    ("300-idle-tls-connections", _flood_idle, "closed", "health answered"),
    ("200-bare-tcp-sockets", _flood_tcp, "served", "health"),
    ("30-non-http-over-tls", _flood_garbage_tls, 400, "Invalid HTTP request"),
    ("30-random-bytes-instead-of-tls", _flood_garbage_tcp, "closed", "closed at the TLS layer"),
    ("100-pipelined-without-token", _flood_pipelined, 401, "100 × 401"),
    ("30-half-closed", _flood_half_open, "closed", "closed"),
    ("8-runs-against-a-queue-of-2", _flood_jobs, 503, "The server is busy: 2 jobs queued"),
):
    case("flood-" + name, "flood", expect, pattern, fn)


# =================================================================================================== slow headers
def _slow_head(head_bytes, drip=()):
    def run(t):
        data, seconds = send_slowly(t, head_bytes, list(drip), 0.25)
        return timed_answer(data, seconds, HEAD_S)

    return run


def _keepalive_idle(t):
    head = get_head(t, "/v1/health")
    sock = t.tls()
    try:
        sock.sendall(head)
        first = sock.recv(65536)
        data, seconds, closed = until_closed(sock, HEAD_S + MARGIN_S)
    finally:
        sock.close()
    if not first.startswith(b"HTTP/1.1 200") or not closed:
        return Outcome("open", "an idle kept-alive connection stayed open")
    return Outcome("closed", f"closed {seconds:.1f} s after its answer")


HEALTH_HEAD = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nothing-yet\r\n\r\n"
for name, fn in (
    ("silent-after-handshake", _slow_head(b"")),
    ("half-a-request-line", _slow_head(b"GET /v1/hea")),
    ("headers-never-end", _slow_head(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")),
    ("head-dripped-a-byte-at-a-time", _slow_head(b"G", [bytes([c]) for c in HEALTH_HEAD[1:]])),
    ("endless-header-lines", _slow_head(b"GET / HTTP/1.1\r\n", [b"X-Pad: %d\r\n" % i for i in range(200)])),
    ("kept-alive-then-idle", _keepalive_idle),
):
    case("slow-head-" + name, "slow headers", "closed", "closed", fn)


# ===================================================================================================== slow bodies
def _slow_body(path, length, first=b"", drip=(), extra=""):
    def run(t):
        data, seconds = send_slowly(t, post_head(t, path, length, extra) + first, list(drip), 0.25)
        return timed_answer(data, seconds, BODY_S)

    return run


def _pipelined_stall(t):
    """A GET and, in the same packet, a POST whose body stops: the POST begins only once the GET is answered."""
    data, seconds = send_slowly(t, get_head(t, "/v1/health") + post_head(t, "/v1/jobs", 4_000_000), [], 0.25)
    answers = data.split(b"HTTP/1.1 ")
    return timed_answer(b"HTTP/1.1 " + answers[-1], seconds, BODY_S) if len(answers) == 3 else Outcome("open", "")


def _half_sent_then_gone(t):
    sock = t.tls()
    sock.sendall(post_head(t, "/v1/jobs", 4_000_000) + b"\0" * 5000)
    sock.shutdown(socket.SHUT_WR)  # the client stops sending for good (and reads raw TLS records from now on)
    _data, seconds, closed = until_closed(sock, BODY_S + MARGIN_S)
    sock.close()
    return Outcome("closed" if closed else "open", f"closed after {seconds:.1f} s")


for name, fn in (
    ("job-stops-after-head", _slow_body("/v1/jobs", 4_000_000)),
    ("job-stops-mid-frame", _slow_body("/v1/jobs", 4_000_000, frame()[:300])),
    ("job-trickles-10-bytes", _slow_body("/v1/jobs", 4_000_000, b"", [b"\0" * 10] * 40)),
    ("inspect-upload-stops", _slow_body("/v1/models/inspect", 2_000_000, b"UNSGWIRE")),
    ("expect-100-continue-then-nothing", _slow_body("/v1/jobs", 1_000_000, b"", [], "Expect: 100-continue\r\n")),
    ("pipelined-behind-a-get", _pipelined_stall),
):
    case("slow-body-" + name, "slow body", 408, "stopped arriving", fn)
case("slow-body-half-sent-then-gone", "slow body", "closed", "closed", _half_sent_then_gone)


def _chunked_stall(t):
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.tokens['owner']}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\nUNSGWIRE"
    ).encode()
    data, seconds = send_slowly(t, head, [], 0.25)
    return timed_answer(data, seconds, BODY_S)


case("slow-body-chunked-body-stops", "slow body", 408, "stopped arriving", _chunked_stall)


# ================================================================================================= malformed wire
def _deep(header):
    text = json.dumps(header)
    return text.replace('"fields": {', '"fields": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1).encode()


def _set(key, value):
    def edit(header):
        header[key] = value

    return edit


def _arrays(fn):
    def edit(header):
        header["arrays"] = fn(header["arrays"])

    return edit


ZEROS = np.zeros((1, 16, 16, 16), np.int16)
WIRE = [
    ("empty-body", b"", 400, "Malformed request"),
    ("bad-magic", b"NOTWIRE!" + frame()[8:], 400, "bad magic"),
    ("header-longer-than-body", frame()[:8] + b"\x00\x10\x00\x00" + frame()[12:60], 400, "too large or truncated"),
    ("header-length-4-gib", frame()[:8] + b"\xff\xff\xff\xff" + frame()[12:], 400, "too large or truncated"),
    ("header-not-json", frame(raw=lambda h: b"{not json"), 400, "not JSON"),
    ("header-not-utf8", frame(raw=lambda h: b'{"version": 1, "\xff\xfe": 1}'), 400, "Malformed request"),
    ("header-a-list", frame(raw=lambda h: b"[1, 2, 3]"), 400, "Malformed request"),
    ("header-nested-100000-deep", frame(raw=_deep), 400, "nests too deeply"),
    ("frame-version-99", frame(edit=_set("version", 99)), 400, "frame version"),
    ("fields-not-an-object", frame(edit=_set("fields", [1])), 400, "needs 'fields'"),
    ("17-arrays", frame(edit=_arrays(lambda a: a * 17)), 400, "needs 'fields'|arrays"),
    ("two-arrays-one-name", frame(edit=_arrays(lambda a: a * 2)), 400, "same name"),
    ("trailing-bytes", frame(tail=b"\0" * 100), 400, "do not add up"),
    ("truncated-array-data", frame()[:-40], 400, "do not add up"),
    ("dtype-object-pickle", frame(edit=array_edit(dtype="|O")), 400, "is not one of"),
    ("dtype-complex", frame(edit=array_edit(dtype="<c16")), 400, "is not one of"),
    ("dtype-unicode", frame(edit=array_edit(dtype="<U4")), 400, "is not one of"),
    ("dtype-big-endian", frame(edit=array_edit(dtype=">i2")), 400, "is not one of"),
    ("dtype-not-a-string", frame(edit=array_edit(dtype=["<i2"])), 400, "is not one of|bad"),
    ("volume-of-booleans", frame(arrays={"volume": ZEROS.astype(bool)}), 400, "numeric \\(C, I, J, K\\)"),
    ("volume-3d", frame(arrays={"volume": ZEROS[0]}), 400, "numeric \\(C, I, J, K\\)"),
    ("shape-negative", frame(edit=array_edit(shape=[1, -16, 16, 16])), 400, "bad shape"),
    ("shape-float", frame(edit=array_edit(shape=[1, 16.5, 16, 16])), 400, "bad shape"),
    ("shape-string", frame(edit=array_edit(shape="1,16,16,16")), 400, "bad shape"),
    ("shape-wraps-64-bit", frame(edit=array_edit(shape=[1, 2**39, 2**39, 2**39])), (400, 413), "limit|bad shape"),
    ("shape-declares-2-gib", frame(edit=array_edit(shape=[1, 4096, 4096, 64])), 413, "over this server's limit"),
    ("shape-bigger-than-its-data", frame(edit=array_edit(shape=[1, 16, 16, 17])), ("job:error", 400), "bytes|hold"),
    ("encoding-lzma", frame(edit=array_edit(encoding="lzma")), 400, "bad encoding"),
    ("size-negative", frame(edit=array_edit(size=-1)), 400, "bad encoding|size"),
    ("array-name-a-path", frame(edit=array_edit(name="../volume")), 400, "bad array name|Unexpected arrays"),
    ("no-volume", frame(arrays={}), 400, "needs a numeric"),
    ("extra-model-array", frame(arrays={"volume": ZEROS, "model": np.zeros(64, np.uint8)}), 400, "uploaded model"),
    ("raw-bytes-too-few", frame(edit=array_edit(encoding="raw")), (400, "job:error"), "raw bytes|do not add"),
    ("affine-a-string", with_fields(affine="eye(4)"), 400, "4×4"),
    ("affine-ragged", with_fields(affine=[[1, 0, 0, 0], [0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]), 400, "4×4"),
    ("affine-singular", with_fields(affine=[[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), 400, "singular"),
    ("affine-nan", frame(raw=lambda h: json.dumps(h).replace("1.0", "NaN", 1).encode()), 400, "4×4|finite"),
    ("affine-absurd-spacing", with_fields(affine=np.diag([1e300, 1, 1, 1]).tolist()), 400, "voxel spacing"),
    ("affine-missing", frame({k: v for k, v in FIELDS.items() if k != "affine"}), 400, "affine|4×4"),
    ("option-unknown", with_options(bogus=1), 400, "Unknown segment option"),
    ("option-threshold-7", with_options(threshold=7), 400, "outside \\[0, 1\\]"),
    ("option-roi-a-billion", with_options(roi_size=[10**9, 10**9, 10**9]), 400, "roi"),
    ("option-overlap-1.5", with_options(overlap=1.5), 400, "overlap"),
    ("option-device-tpu", with_options(device="tpu"), 400, "device"),
    ("options-a-string", with_fields(options="fast"), 400, "option"),
    ("model-missing", frame({k: v for k, v in FIELDS.items() if k != "model"}), 400, "by name"),
]
for name, body, status, pattern in WIRE:
    case("wire-" + name, "malformed wire", status, pattern, lambda t, body=body: submit(t, body))


def _raw_http(data, wait=5.0):
    return lambda t: t.exchange(data if isinstance(data, bytes) else data(t), wait)


def _authed(text):
    return lambda t: text.replace("TOKEN", t.tokens["owner"]).encode()


HTTP = [
    ("content-length-negative", _authed("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
                                        "Content-Length: -5\r\n\r\n"), (400, 413), "Invalid HTTP|limit"),
    ("content-length-words", _authed("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
                                     "Content-Length: ten\r\n\r\n"), 400, "Invalid HTTP"),
    ("length-and-chunked-smuggling", _authed("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
                                             "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     400, "Invalid HTTP|Malformed request"),  # h11 reads it chunked (RFC 9112): an empty body
    ("transfer-encoding-obfuscated", _authed("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
                                             "Transfer-Encoding: chunked, identity\r\n\r\n"), 400, "Invalid HTTP"),
    ("nul-in-a-header", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "Invalid HTTP"),
    ("bad-method-token", b"GE T /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Invalid HTTP"),
    ("header-of-100-kb", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", (400, 401),
     "Invalid HTTP|unauthorized"),  # a head over 16 KB arriving in pieces is refused; arriving at once: no token
    ("10000-header-lines", b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n", (400, 401),
     "Invalid HTTP|unauthorized"),
    ("url-of-100-kb", b"GET /v1/models/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (400, 401),
     "Invalid HTTP|unauthorized"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 401), "Invalid HTTP|unauthorized"),
    ("http-0.9", b"GET /v1/health\r\n\r\n", (400, "closed"), "Invalid HTTP|no HTTP answer"),
]  # fmt: skip
for name, data, status, pattern in HTTP:
    case("http-" + name, "malformed wire", status, pattern, _raw_http(data))

for name, ctype in (
    ("text-plain", "text/plain"),
    ("form-urlencoded", "application/x-www-form-urlencoded"),
    ("multipart-form", "multipart/form-data; boundary=x"),
    ("json", "application/json"),
):
    case(
        "content-type-" + name,
        "malformed wire",
        415,
        "application/octet-stream",
        lambda t, ctype=ctype: t.request("POST", "/v1/jobs", frame(), headers={"Content-Type": ctype}),
    )
case("body-over-16-mb-announced", "malformed wire", 413, "over this server's limit",
     lambda t: t.exchange(post_head(t, "/v1/jobs", 64 << 20)))  # fmt: skip


def _chunked_over_limit(t):
    """A chunked body (no length announced) of 20 MiB: cut off at the 16 MB limit with a 413 while it arrives."""
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.tokens['owner']}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"100000\r\n" + b"\0" * (1 << 20) + b"\r\n"
    data, _seconds = send_slowly(t, head, [chunk] * 20 + [b"0\r\n\r\n"], 0.0)
    return first_answer(data) if data.startswith(b"HTTP/1.1 ") else Outcome("closed", "no answer")


case("body-over-16-mb-chunked", "malformed wire", 413, "over this server's limit", _chunked_over_limit)
case("unknown-endpoint", "malformed wire", 404, "Not Found", lambda t: t.request("GET", "/v1/admin"))
case("wrong-method", "malformed wire", 405, "Method Not Allowed", lambda t: t.request("PUT", "/v1/jobs", b"x"))
case("events-after-not-a-number", "malformed wire", 422, "int",
     lambda t: t.request("GET", "/v1/jobs/x/events?after=many"))  # fmt: skip
case("events-wait-1e308-unknown-job", "malformed wire", 404, "does not know this job",
     lambda t: t.request("GET", "/v1/jobs/nosuch/events?wait=1e308"))  # fmt: skip


# ============================================================================================== authentication
ENDPOINTS = [
    ("health", "GET", "/v1/health", None),
    ("info", "GET", "/v1/info", None),
    ("models", "GET", "/v1/models", None),
    ("model", "GET", "/v1/models/tiny", None),
    ("submit", "POST", "/v1/jobs", frame()),
    ("inspect", "POST", "/v1/models/inspect", b"UNSGWIRE"),
    ("cancel", "DELETE", "/v1/jobs/whatever", None),
]
for name, method, path, body in ENDPOINTS:
    case(f"auth-no-token-{name}", "auth", 401, "unauthorized",
         lambda t, m=method, p=path, b=body: t.request(m, p, b, token=None))  # fmt: skip
for name, header in (
    ("basic-scheme", lambda t: "Basic " + t.tokens["owner"]),
    ("bearer-empty", lambda t: "Bearer "),
    ("wrong-token", lambda t: "Bearer " + "A" * 43),
    ("token-prefix", lambda t: "Bearer " + t.tokens["owner"][:20]),
    ("token-plus-a-character", lambda t: "Bearer " + t.tokens["owner"] + "x"),
    ("revoked-token", lambda t: "Bearer " + t.tokens["carol"]),
    ("expired-token", lambda t: "Bearer " + t.tokens["dave"]),
    ("token-sha256-as-token", lambda t: "Bearer " + identity.digest(t.tokens["alice"])),
):
    case(f"auth-{name}", "auth", 401, "unauthorized",
         lambda t, h=header: t.request("GET", "/v1/models", headers={"Authorization": h(t)}, token=None))  # fmt: skip
case("auth-token-in-query", "auth", 401, "unauthorized",
     lambda t: t.request("GET", "/v1/models?token=" + t.tokens["owner"], token=None))  # fmt: skip
case(
    "auth-token-in-cookie",
    "auth",
    401,
    "unauthorized",
    lambda t: t.request("GET", "/v1/models", headers={"Cookie": "token=" + t.tokens["owner"]}, token=None),
)
case("auth-token-with-nul", "auth", (400, 401), "Invalid HTTP|unauthorized",
     lambda t: t.exchange(get_head(t, "/v1/models", extra="\x00")))  # fmt: skip


def _other_token(method, what, who):
    """``who`` reaches alice's job: refused as an unknown job (404), and alice still has it afterwards."""

    def run(t):
        job = t.alice_job()
        path = f"/v1/jobs/{job}" + {"events": "/events?wait=0", "result": "/result", "cancel": ""}[what]
        got = t.request(method, path, token=who)
        still = t.request("GET", f"/v1/jobs/{job}/result", token="alice").status
        return got if still == 200 else Outcome("taken", f"alice lost her job ({still})")

    return run


for who in ("bob", "owner"):
    for method, what in (("GET", "events"), ("GET", "result"), ("DELETE", "cancel")):
        case(f"auth-{who}-{what}-alice-job", "auth", 404, "does not know this job", _other_token(method, what, who))
case("auth-guessed-job-ids", "auth", 404, "does not know this job",
     lambda t: [t.request("GET", f"/v1/jobs/{os.urandom(9).hex()}/result") for _ in range(20)][-1])  # fmt: skip


# ================================================================================================ path tricks
URL_NAMES = [
    ("dot-dot", quote("../tiny", safe="")),
    ("dot-dot-raw-slash", "..%2Ftiny"),
    ("absolute", quote("/etc/passwd", safe="")),
    ("nul", "tiny%00"),
    ("nul-suffix", "tiny%00.pt"),
    ("file-name-with-suffix", "tiny.pt"),
    ("dot-dot-alone", ".."),
    ("inside-a-bundle", quote("BrainT1UNet/configs/inference.json", safe="")),
    ("double-encoded", "%252e%252e%252ftiny"),
    ("backslashes", quote("..\\..\\tiny", safe="")),
    ("home", quote("~root", safe="")),
    ("full-width", quote("ｔｉｎｙ", safe="")),
    ("4000-characters", "a" * 4000),
    ("link-out-of-the-folder", "escape"),
    ("newline", "tiny%0aINFO"),
]
for name, quoted in URL_NAMES:
    case(f"path-url-{name}", "path tricks", (404, 400), "no model|Not Found|not a model|name",
         lambda t, q=quoted: t.request("GET", "/v1/models/" + q))  # fmt: skip
case("path-url-unencoded-dot-dot", "path tricks", 404, "Not Found|no model",
     lambda t: t.exchange(get_head(t, "/v1/models/../../etc/passwd")))  # fmt: skip
for name, model in (
    ("dot-dot", {"name": "../tiny"}),
    ("absolute", {"name": "/etc/passwd"}),
    ("nul", {"name": "tiny\x00"}),
    ("link-out-of-the-folder", {"name": "escape"}),
    ("inside-a-bundle", {"name": "BrainT1UNet/models/model.pt"}),
    ("a-path", {"path": "/etc/passwd"}),
    ("a-path-and-a-name", {"path": "../outside.pt", "name": "tiny"}),
    ("name-a-number", {"name": 5}),
    ("name-a-list", {"name": ["tiny"]}),
):
    case(f"path-job-{name}", "path tricks", (404, 400), "no model|never opens a path|name|model",
         lambda t, m=model: submit(t, with_fields(model=m)))  # fmt: skip
case("path-job-model-a-string", "path tricks", 400, "by name", lambda t: submit(t, with_fields(model="../tiny")))


# ================================================================================================ hostile uploads
def _ts_bundle(t):
    scripted = torchscript_bytes()
    root = t.root / f"ts-bundle-{time.monotonic_ns()}"
    return bundle_zip(root, extra=[("b/models/model.ts", scripted)], drop=("models/model.pt",))


def _as_a_run(build):
    """The model ``build(t)`` makes, uploaded with a run (its refusal is the job's error, or a 400)."""

    def run(t):
        fields = {**FIELDS, "model": None, "upload": {"suffix": ".pt", "strides": None}}
        arrays = {"volume": np.zeros((1, 16, 16, 16), np.int16), "model": np.frombuffer(build(t), np.uint8)}
        return submit(t, b"".join(wire.encode(fields, arrays)))

    return run


def _bundle(t, **kwargs):
    return bundle_zip(t.root / f"bundle-{time.monotonic_ns()}", **kwargs)


def _system(t):
    return {"_target_": "monai.utils.module.os.system", "command": f"touch '{t.markers / 'ran'}'"}


UPLOADS = [
    ("torchscript-file", lambda t: upload(".pt", torchscript_bytes()), 400, "TorchScript"),
    ("torchscript-suffix-ts", lambda t: upload(".ts", torchscript_bytes()), 400, "TorchScript|not accepted"),
    ("bundle-of-torchscript", lambda t: upload(".zip", _ts_bundle(t)), 400, "TorchScript"),
    ("zip-bomb", lambda t: upload(".zip", _bundle(t, extra=[("b/configs/big.json", b" " * (60 << 20))])), 400,
     "zip bomb|expands"),
    ("zip-slip", lambda t: upload(".zip", _bundle(t, extra=[("b/../../evil.json", b"{}")])), 400, "outside|\\.\\."),
    ("zip-absolute-entry", lambda t: upload(".zip", _bundle(t, extra=[("/tmp/evil.json", b"{}")])), 400,
     "absolute|outside|entry"),
    ("zip-symlink", lambda t: upload(".zip", _bundle(t, extra=[symlink_entry("b/configs/link.json", "/etc/passwd")])),
     400, "link"),
    ("not-a-zip", lambda t: upload(".zip", b"PK\x03\x04 truncated"), 400, "zip|bundle|read"),
    ("pickle-runs-a-command", lambda t: upload(".pt", checkpoint_bytes({"x": Evil(str(t.markers / "ran"))})), 400,
     "checkpoint|weights|load|pickle"),
    ("bundle-network-runs-a-command", lambda t: upload(".zip", _bundle(t, network_def=_system(t))), 400, "network_def"),
    ("bundle-expression", lambda t: upload(".zip", _bundle(t, network_def="$__import__('os').system('id')")), 400,
     "expression|network_def"),
    ("garbage-checkpoint", lambda t: upload(".pt", os.urandom(4096)), 400, "checkpoint|load|read"),
    ("unknown-suffix", lambda t: upload(".exe", b"MZ" + bytes(100)), 400, "suffix|not accepted"),
    ("model-as-int16", lambda t: upload(".pt", bytes(200), dtype=np.int16), 400, "bytes \\(uint8\\)"),
    ("inspect-with-a-volume", lambda t: upload(".pt", bytes(10), extra={"volume": np.zeros((1, 8, 8, 8))}), 400,
     "carries a model only"),
    ("sidecar-nested-100000-deep", lambda t: upload(".pt", checkpoint_bytes(tiny_unet().state_dict()),
                                                    b"[" * 100_000 + b"]" * 100_000), 400, "JSON|nest|config"),
    ("sidecar-not-json", lambda t: upload(".pt", checkpoint_bytes(tiny_unet().state_dict()), b"\xff{"), 400,
     "JSON|config"),
    ("sidecar-network-of-a-billion-channels", lambda t: upload(".pt", checkpoint_bytes(tiny_unet().state_dict()),
                                                               json.dumps({"channels": [10**9] * 3}).encode()), 400,
     "channels|network|match|load"),
]  # fmt: skip
for name, build, status, pattern in UPLOADS:
    case(f"upload-{name}", "hostile uploads", status, pattern,
         lambda t, b=build: t.request("POST", "/v1/models/inspect", b(t)))  # fmt: skip
case("upload-over-16-mb", "hostile uploads", 413, "over this server's limit",
     lambda t: t.request("POST", "/v1/models/inspect", upload(".pt", os.urandom(17 << 20))))  # fmt: skip
case("upload-torchscript-as-a-run", "hostile uploads", ("job:error", 400), "TorchScript",
     _as_a_run(lambda t: torchscript_bytes()))  # fmt: skip
case("upload-pickle-as-a-run", "hostile uploads", ("job:error", 400), "checkpoint|weights|load|pickle",
     _as_a_run(lambda t: checkpoint_bytes({"x": Evil(str(t.markers / "ran"))})))  # fmt: skip


# ============================================================================================================ TLS
def _handshake(who, trust="ca"):
    def run(t):
        raw = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        try:
            sock = t.context(who, trust).wrap_socket(raw, server_hostname="127.0.0.1")
        except (OSError, ValueError) as exc:
            raw.close()
            return Outcome("refused", f"handshake failed ({type(exc).__name__})")
        try:
            sock.sendall(get_head(t, "/v1/health"))
            data, _seconds, closed = until_closed(sock, MARGIN_S)
        except OSError:
            data, closed = b"", True
        finally:
            sock.close()
        if data:
            return Outcome(int(data[9:12]), "answered", data.decode("latin-1"))
        return Outcome("refused" if closed else "open", "no HTTP answer: the server ended the TLS session")

    return run


def _plain_http(t):
    sock = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    sock.sendall(get_head(t, "/v1/health"))
    data, _seconds, closed = until_closed(sock, MARGIN_S)
    sock.close()
    if data.startswith(b"HTTP"):
        return Outcome(int(data[9:12]), "answered plain http", data.decode("latin-1"))
    return Outcome("closed" if closed else "open", "plain http to the https port: no HTTP answer")


def _product_client(change):
    """``RemoteRunner`` (the product's client) with alice's settings changed by ``change(t)``."""

    def run(t):
        from UNetSigmoidSegLib.runners.remote import RemoteRunner

        opts = dict(t.server.client_options, **change(t))
        url = opts.pop("url", t.server.url)
        try:
            RemoteRunner(url, token=t.tokens["owner"], **opts).health()
        except RemoteError as exc:
            return Outcome("client-refused", f"{exc.message} — {exc.hint}")
        return Outcome(200, "connected")

    return run


for name, fn, expect, pattern in (
    ("plain-http-to-the-https-port", _plain_http, "closed", "no HTTP answer"),
    ("no-client-certificate", _handshake(None), "refused", "TLS"),
    ("certificate-of-another-ca", _handshake("mallory"), "refused", "TLS|handshake"),
    ("expired-certificate", _handshake("expired"), "refused", "TLS|handshake"),
    ("self-signed-certificate", _handshake("other"), "refused", "TLS|handshake"),
    ("client-trusting-another-ca", _handshake("alice", trust="other"), "refused", "handshake failed"),
    ("product-client-without-certificate", _product_client(lambda t: {"client_cert": None, "client_key": None}),
     "client-refused", "requires a client certificate"),
    ("product-client-certificate-of-another-ca",
     _product_client(lambda t: {"client_cert": str(t.pki["mallory"][0]), "client_key": str(t.pki["mallory"][1])}),
     "client-refused", "refused this client's certificate"),
    ("product-client-server-not-trusted", _product_client(lambda t: {"cafile": str(t.pki["other"][0])}),
     "client-refused", "not trusted"),
    ("product-client-hostname-mismatch", _product_client(lambda t: {"url": f"https://localhost:{t.port}"}),
     "client-refused", "not trusted"),
):  # fmt: skip
    case("tls-" + name, "TLS", expect, pattern, fn)


# ============================================================================================ the run
@pytest.mark.parametrize("attack", CASES, ids=[c.name for c in CASES])
def test_attack(target, attack):
    got = attack.run(target)
    RESULTS[attack.name] = got
    print(f"{attack.name}: {got.status} {got.reason[:150]}")  # the run's record (pytest -s shows it)
    assert got.status in attack.expect, f"{attack.kind}: expected {attack.expect}, got {got.status}: {got.reason}"
    assert re.search(attack.pattern, got.reason), f"{attack.pattern!r} not in {got.reason!r}"
    assert "\n" not in got.reason.strip(), got.reason  # one line
    leaked = [text for text in forbidden(target) if text in got.raw or text in got.reason]
    assert not leaked, f"the answer carries {leaked}: {got.raw[:500]}"
    try:
        error = json.loads(got.raw).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):  # the product's error shape: what is wrong, and what to do
        assert error.get("message") and error.get("hint"), f"no fix in {got.raw}"


def test_the_server_survived_the_whole_run(target):
    server = target.server
    assert len(CASES) >= 90 and len({c.name for c in CASES}) == len(CASES)
    assert server.popen.poll() is None, "the server died"
    health = server.runner().health()
    assert health["ready"] and health["status"] == "ok"
    assert target.request("GET", "/v1/models").status == 200
    deadline = time.time() + 15
    while server.temp_entries() and time.time() < deadline:
        time.sleep(0.1)
    assert server.temp_entries() == []  # every spooled body and upload removed
    assert sorted(p.name for p in target.markers.iterdir()) == []  # no payload ran
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    kinds = {}
    for attack in CASES:
        kinds[attack.kind] = kinds.get(attack.kind, 0) + 1
    ran = [name for name in RESULTS if name in {c.name for c in CASES}]
    print(f"\nattack run: {len(CASES)} cases ({', '.join(f'{k} {n}' for k, n in kinds.items())}); {len(ran)} ran here")
