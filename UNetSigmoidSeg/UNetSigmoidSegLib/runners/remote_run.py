"""A remote run's network steps, in the job's own thread: send the request, follow the server's messages (long
poll), download the result and release it on the server. Every step honours the job's cancel request. Also the one
reading of a server's error answers (``response_error``, ``message_error``)."""

import threading
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..contract import wire
from ..contract.messages import Error, message_from_dict
from ..contract.result import SegmentResult
from ..errors import CancelledError, RemoteError, UserError, WorkerInternalError
from .http import Http, Response
from .job import QueueJob

API = "/v1"
RETRY_REASONS = ("down", "connection", "timeout")
PROGRESS_EVERY_S = 0.1


class RemoteRun:
    """One job's conversation with the server. ``runner``: its ``RemoteRunner`` (timeouts, ``reconnect``,
    ``health``); ``server_id``: the server's job id once it accepted the run."""

    def __init__(self, runner: Any, job: QueueJob) -> None:
        self.runner, self.job = runner, job
        self.server_id: Optional[str] = None
        self.cancel_sent = False
        self.cancel_lock = threading.Lock()

    def cancel_on_server(self) -> None:
        """(any thread) Ask the server to cancel the job once, as soon as its server id is known."""
        with self.cancel_lock:
            if self.cancel_sent or self.server_id is None or self.job.done:
                return
            self.cancel_sent = True
        try:
            self.runner.delete(self.server_id, 10.0, "cancelling")
        except UserError:  # the job's own thread reports what happened to the connection
            pass

    def send(self, http: Http, fields: Dict[str, Any], arrays: Dict[str, np.ndarray], limit: int) -> str:
        """Compress and upload the request (progress stage ``upload``); returns the server's instance id."""
        runner, job = self.runner, self.job
        job.progress("upload", 0.0, "compressing the volume")
        t0 = time.perf_counter()
        chunks = wire.encode(fields, arrays)
        size = wire.encoded_size(chunks)
        job.info.request_bytes = size
        job.info.timings["compress_s"] = time.perf_counter() - t0
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
        job.info.timings["upload_s"] = time.perf_counter() - t1
        if response.status != 202:
            raise response_error(runner.url, response, "sending the volume")
        accepted = response.json()
        self.server_id = job.id = str(accepted["job"])
        job.info.server_job, job.info.ahead = self.server_id, int(accepted.get("ahead", 0))
        if job.cancel_requested.is_set():
            self.cancel_on_server()
        return str(accepted["instance"])

    def follow(self, http: Http, instance: str, grid: Tuple[int, ...]) -> SegmentResult:
        """Long-poll the job's messages until its terminal one; the result, or its error / ``CancelledError``."""
        runner, job = self.runner, self.job
        after = 0
        cancel_deadline = None
        while True:
            if job.cancel_requested.is_set():
                self.cancel_on_server()
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
                    f"{API}/jobs/{self.server_id}/events?after={after}&wait={wait:g}",
                    timeout=wait + runner.timeout_s,
                    doing="waiting for the run",
                )
            except RemoteError as exc:
                if exc.reason not in RETRY_REASONS:
                    raise
                runner.reconnect(job, instance, exc)
                continue
            if response.status == 404:
                raise self.lost(instance)
            if response.status != 200:
                raise response_error(runner.url, response, "waiting for the run")
            data = response.json()
            for message in data["messages"]:
                after = max(after, int(message["seq"]))
                kind = message["type"]
                if kind == "queue":
                    ahead = int(message.get("ahead", 0))
                    job.info.ahead, job.info.max_ahead = ahead, max(ahead, job.info.max_ahead or 0)
                    text = f"{ahead} job(s) ahead in the server's queue" if ahead else "next in the server's queue"
                    job.progress("queued", 0.0, text)
                elif kind in ("progress", "log", "warning"):
                    job.put(message_from_dict(message))
                elif kind == "result":
                    job.info.update(message)  # server_s, cache_hit, load_s, load_count
                    return self.download(http, instance, grid)
                elif kind == "cancelled":
                    raise CancelledError(str(message.get("message") or "cancelled"))
                elif kind == "error":
                    raise message_error(message, runner.url)

    def download(self, http: Http, instance: str, grid: Tuple[int, ...]) -> SegmentResult:
        """Fetch the result frame, rebuild the ``SegmentResult`` (``from_wire``), then release it on the server."""
        runner, job = self.runner, self.job
        job.progress("download", 0.0, "result")
        t0 = time.perf_counter()
        while True:
            try:
                response = http.request(
                    "GET", f"{API}/jobs/{self.server_id}/result", timeout=runner.timeout_s + 60.0, doing="downloading"
                )
                break
            except RemoteError as exc:
                if exc.reason not in RETRY_REASONS:
                    raise
                runner.reconnect(job, instance, exc)
        if response.status == 404:
            raise self.lost(instance)
        if response.status != 200:
            raise response_error(runner.url, response, "downloading the result")
        job.info.timings["download_s"] = time.perf_counter() - t0
        job.info.result_bytes = len(response.body)
        voxels = int(np.prod(grid))
        try:
            fields, arrays = wire.decode(
                response.body, 255 * voxels + (1 << 20), 512 * voxels + (1 << 20), writable=True
            )
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
            http.request("DELETE", f"{API}/jobs/{self.server_id}", timeout=10.0, doing="releasing the result")
        except RemoteError:
            pass
        counters = http.counters
        job.info.bytes_sent, job.info.bytes_received = counters.sent, counters.received
        job.info.requests = counters.requests
        job.progress("download", 1.0, "result")
        return result

    def lost(self, instance: str) -> RemoteError:
        """The error for a job the server does not know: restarted (another instance) or dropped."""
        runner = self.runner
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


def response_error(url: str, response: Response, doing: str) -> BaseException:
    """The exception an error answer of the server at ``url`` stands for (401 without detail → a token message)."""
    if response.status == 401:
        return RemoteError(
            f"The server at {url} refused the token (401 Unauthorized)",
            "Use the token from the server's token file; it changes when the server's administrator rotates it.",
            reason="auth",
        )
    try:
        body = response.json().get("error")
    except (UserError, AttributeError):
        body = None
    if not isinstance(body, dict):
        return RemoteError(
            f"The server at {url} answered {response.status} while {doing}",
            "Is that URL a UNetSigmoidSeg server (unetsigmoidseg serve)?",
            reason="protocol",
        )
    return message_error(body, url)


def message_error(body: Dict[str, Any], url: str) -> BaseException:
    """The exception of a server ``error`` body or terminal message (``kind``, ``message``, ``hint``, ``reason``)."""
    error = message_from_dict(dict(body, type="error"))
    assert isinstance(error, Error)
    if error.reason == "busy":
        return RemoteError(f"Server busy, {body.get('queued', '?')} queued: {error.message}", error.hint, "busy")
    if error.kind == "internal":
        return WorkerInternalError(f"{error.message} (server {url}) — {error.hint}")
    error.reason = error.reason or "server"
    return error.exception()
