"""A remote run's network steps, in the job's own thread: send the request, follow the server's messages (long
poll), download the result and release it on the server. Every step honours the job's cancel request."""

import time
from typing import Any, Dict, Tuple

import numpy as np

from ..contract.result import SegmentResult
from ..errors import CancelledError, RemoteError
from . import wire
from .client import API, RETRY_REASONS, message_error
from .job import RemoteJob
from .transport import Http

PROGRESS_EVERY_S = 0.1


def send(runner: Any, job: RemoteJob, http: Http, fields: Dict[str, Any], arrays: Dict[str, np.ndarray], limit: int):
    """Compress and upload the request (progress stage ``upload``); returns the server's instance id."""
    job.progress("upload", 0.0, "compressing the volume")
    t0 = time.perf_counter()
    chunks = wire.encode(fields, arrays)
    size = wire.encoded_size(chunks)
    job.info.update(
        request_bytes=size, raw_volume_bytes=int(arrays["volume"].nbytes), compress_s=time.perf_counter() - t0
    )
    if size > limit:
        raise RemoteError(
            f"The request ({size / 2**20:.0f} MB compressed) is over the server's limit of {limit / 2**20:.0f} MB",
            "Crop or downsample the volume, or ask the server's administrator for a larger --max-request-mb.",
            reason="too_large",
        )
    last = [0.0]

    def on_sent(sent: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or sent == total:
            last[0] = now
            job.progress("upload", sent / max(1, total), f"{sent / 2**20:.1f} of {total / 2**20:.1f} MB")

    t1 = time.perf_counter()
    try:
        response = http.request(
            "POST",
            API + "/jobs",
            chunks,
            timeout=runner.timeout_s,
            doing="sending the volume",
            on_sent=on_sent,
            should_stop=job.cancel_requested.is_set,
        )
    except InterruptedError:
        raise CancelledError("cancelled while sending the volume") from None
    job.info["upload_s"] = time.perf_counter() - t1
    if response.status != 202:
        raise runner.response_error(response, "sending the volume")
    accepted = response.json()
    job.server_id = job.id = str(accepted["job"])
    job.info.update(server_job=job.server_id, ahead=int(accepted.get("ahead", 0)))
    if job.cancel_requested.is_set():
        runner._cancel_on_server(job)
    return str(accepted["instance"])


def follow(runner: Any, job: RemoteJob, http: Http, instance: str, grid: Tuple[int, ...]) -> SegmentResult:
    """Long-poll the job's messages until its terminal one; the result, or its error / ``CancelledError``."""
    after = 0
    cancel_deadline = None
    while True:
        if job.cancel_requested.is_set():
            runner._cancel_on_server(job)
            cancel_deadline = cancel_deadline or time.monotonic() + runner.cancel_timeout_s
            if time.monotonic() > cancel_deadline:
                raise CancelledError(
                    f"cancelled (the server did not confirm within {runner.cancel_timeout_s:g} s; it stops the job "
                    "at its next step)"
                )
        wait = 1.0 if cancel_deadline else runner.poll_wait_s
        try:
            response = http.request(
                "GET",
                f"{API}/jobs/{job.server_id}/events?after={after}&wait={wait:g}",
                timeout=wait + runner.timeout_s,
                doing="waiting for the run",
            )
        except RemoteError as exc:
            if exc.reason not in RETRY_REASONS:
                raise
            runner.reconnect(job, instance, exc)
            continue
        if response.status == 404:
            raise lost(runner, job, instance)
        if response.status != 200:
            raise runner.response_error(response, "waiting for the run")
        data = response.json()
        for message in data["messages"]:
            after = max(after, int(message["seq"]))
            kind = message["type"]
            if kind == "queue":
                ahead = int(message.get("ahead", 0))
                job.info["ahead"] = ahead
                job.info["max_ahead"] = max(ahead, int(job.info.get("max_ahead", 0)))
                text = f"{ahead} job(s) ahead in the server's queue" if ahead else "next in the server's queue"
                job.progress("queued", 0.0, text)
            elif kind in ("progress", "log", "warning"):
                job.emit({k: v for k, v in message.items() if k != "seq"})
            elif kind == "result":
                job.info.update(
                    server_s=message.get("server_s"), cache_hit=message.get("cache_hit"), load_s=message.get("load_s")
                )
                return download(runner, job, http, instance, grid)
            elif kind == "cancelled":
                raise CancelledError(str(message.get("message") or "cancelled"))
            elif kind == "error":
                raise message_error(message, runner.url)


def download(runner: Any, job: RemoteJob, http: Http, instance: str, grid: Tuple[int, ...]) -> SegmentResult:
    """Fetch the result frame, rebuild the ``SegmentResult`` (``from_wire``), then release it on the server."""
    job.progress("download", 0.0, "result")
    t0 = time.perf_counter()
    while True:
        try:
            response = http.request(
                "GET", f"{API}/jobs/{job.server_id}/result", timeout=runner.timeout_s + 60.0, doing="downloading"
            )
            break
        except RemoteError as exc:
            if exc.reason not in RETRY_REASONS:
                raise
            runner.reconnect(job, instance, exc)
    if response.status == 404:
        raise lost(runner, job, instance)
    if response.status != 200:
        raise runner.response_error(response, "downloading the result")
    job.info["download_s"] = time.perf_counter() - t0
    job.info["result_bytes"] = len(response.body)
    voxels = int(np.prod(grid))
    try:
        fields, arrays = wire.decode(response.body, 255 * voxels + (1 << 20), 512 * voxels + (1 << 20), writable=True)
        result = SegmentResult.from_wire(fields["result"], arrays)
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(
            f"The server's result cannot be read: {exc}",
            "Use a client of the server's UNetSigmoidSeg version.",
            reason="protocol",
        ) from None
    if tuple(result.masks.shape[1:]) != grid:
        raise RemoteError(
            f"The server's result is on a {result.masks.shape[1:]} grid, the volume is {grid}",
            "This is a bug: please report it.",
            reason="protocol",
        )
    try:  # free it on the server now (else it does after its client timeout)
        http.request("DELETE", f"{API}/jobs/{job.server_id}", timeout=10.0, doing="releasing the result")
    except RemoteError:
        pass
    counters = http.counters
    job.info.update(bytes_sent=counters.sent, bytes_received=counters.received, requests=counters.requests)
    job.progress("download", 1.0, "result")
    return result


def lost(runner: Any, job: RemoteJob, instance: str) -> RemoteError:
    """The error for a job the server does not know: restarted (another instance) or dropped."""
    try:
        alive = runner.health()
    except RemoteError:
        alive = {}
    if alive.get("instance") not in (None, instance):
        return RemoteError(
            f"The server at {runner.url} restarted during the run: the job was lost",
            "Nothing was written. Run again.",
            reason="restarted",
        )
    return RemoteError(
        f"The server at {runner.url} no longer knows the job (it waited too long for this client)",
        "Nothing was written. Run again; check the network if this repeats.",
        reason="lost",
    )
